//! A bank for the exactly-once tests of calls between actors: accounts with no bookkeeping
//! of the steps they applied (a repeated debit takes twice), and a transfer saga whose steps
//! are calls from a turn that runs again when it fails.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use gears::prelude::*;

/// Per transfer key, how many of its turns still panic after both their calls, before they
/// commit (so the turn runs again).
static PANICS_AFTER_CALLS: Mutex<BTreeMap<String, u32>> = Mutex::new(BTreeMap::new());

/// Makes the next `n` turns of `Transfer(key)` panic after both their calls.
pub fn panic_after_calls(key: &str, n: u32) {
    lock().insert(key.to_string(), n);
}

/// How many injected panics of `Transfer(key)` are left.
pub fn panics_left(key: &str) -> u32 {
    lock().get(key).copied().unwrap_or(0)
}

fn lock() -> std::sync::MutexGuard<'static, BTreeMap<String, u32>> {
    PANICS_AFTER_CALLS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Takes one injected panic of `Transfer(key)`, if any are left.
fn take_panic(key: &str) -> bool {
    let mut panics = lock();
    match panics.get_mut(key) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    }
}

/// An account. It counts the debits and credits it applied (each a committed turn), and
/// keeps nothing that would let it recognise a repeated one.
#[derive(Actor, Default, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[actor(name = "bank_account")]
pub struct Account {
    /// The balance.
    pub balance: i64,
    /// Debits applied.
    pub debits: u64,
    /// Credits applied.
    pub credits: u64,
}

/// Handler error of [`Account::debit`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Insufficient {
    /// The balance the debit found.
    pub balance: i64,
}

impl std::fmt::Display for Insufficient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "insufficient funds: the balance is {}", self.balance)
    }
}

#[handlers]
impl Account {
    /// Takes `amount`; returns the new balance.
    pub async fn debit(&mut self, amount: i64) -> Result<i64, Insufficient> {
        if self.balance < amount {
            return Err(Insufficient {
                balance: self.balance,
            });
        }
        self.balance -= amount;
        self.debits += 1;
        Ok(self.balance)
    }

    /// Adds `amount`; returns the new balance.
    pub async fn credit(&mut self, amount: i64) -> i64 {
        self.balance += amount;
        self.credits += 1;
        self.balance
    }

    /// The account as it is.
    pub async fn show(&self) -> Account {
        self.clone()
    }
}

impl Transfer {
    /// Both steps answered: panics here if a panic was injected for `key` (after the
    /// calls, before the turn commits), else records the answers.
    fn finish(&mut self, key: &str, left: i64, now: i64) {
        if take_panic(key) {
            panic!("injected: after both steps, before the transfer commits");
        }
        self.answers = vec![left, now];
        self.done = true;
    }
}

/// A transfer: debits `from`, credits `to`, each a call to an [`Account`]. Run by a send or
/// a timer, so a failed or killed turn runs again; its calls are made once by the runtime.
#[derive(Actor, Default, Serialize, Deserialize, Debug)]
#[actor(name = "transfer")]
pub struct Transfer {
    /// Both steps applied, and this turn committed.
    pub done: bool,
    /// The balances the two calls answered.
    pub answers: Vec<i64>,
}

#[handlers]
impl Transfer {
    /// The saga: debit, credit, done.
    pub async fn run(
        &mut self,
        ctx: &Context,
        from: String,
        to: String,
        amount: i64,
    ) -> Result<(), String> {
        let left = ctx
            .get::<Account>(&from)
            .debit(amount)
            .await
            .map_err(|e| e.to_string())?;
        let now = ctx
            .get::<Account>(&to)
            .credit(amount)
            .await
            .map_err(|e| e.to_string())?;
        self.finish(ctx.key(), left, now);
        Ok(())
    }

    /// The saga with both steps awaited together (`tokio::join!`): each call still gets its
    /// id in order, at its first poll.
    pub async fn run_together(
        &mut self,
        ctx: &Context,
        from: String,
        to: String,
        amount: i64,
    ) -> Result<(), String> {
        let (source, target) = (ctx.get::<Account>(&from), ctx.get::<Account>(&to));
        let (left, now) = tokio::join!(source.debit(amount), target.credit(amount));
        let left = left.map_err(|e| e.to_string())?;
        let now = now.map_err(|e| e.to_string())?;
        self.finish(ctx.key(), left, now);
        Ok(())
    }

    /// Runs the transfer from a timer, `ms` from now.
    pub async fn run_later(
        &mut self,
        ctx: &Context,
        from: String,
        to: String,
        amount: i64,
        ms: u64,
    ) {
        ctx.timer::<Self>("run", Timer::after(Duration::from_millis(ms)))
            .run(from, to, amount);
    }

    /// Whether it is done, and what its calls answered.
    pub async fn outcome(&self) -> (bool, Vec<i64>) {
        (self.done, self.answers.clone())
    }
}
