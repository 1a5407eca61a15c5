//! A saga step carries a failed call into its own error type with `?`:
//! `CallError::propagate` turns the callee's handler error into the caller's through `From`,
//! and any other failure of the call (here an invalid key and a panic) into the caller's
//! "unavailable" variant; the calling turn is rolled back like any handler `Err`.

use gears::prelude::*;
use gears::{CallError, KeyError};

/// A purse to take money from and put it in.
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "purse")]
pub struct Purse {
    balance: i64,
}

/// Why [`Purse::debit`] refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Insufficient {
    balance: i64,
}

#[handlers]
impl Purse {
    /// Adds `amount`; returns the balance.
    pub async fn credit(&mut self, amount: i64) -> i64 {
        self.balance += amount;
        self.balance
    }

    /// Takes `amount`, or refuses; returns the balance.
    pub async fn debit(&mut self, amount: i64) -> Result<i64, Insufficient> {
        if amount > self.balance {
            return Err(Insufficient {
                balance: self.balance,
            });
        }
        self.balance -= amount;
        Ok(self.balance)
    }

    /// A step that panics (the purse is reset; the caller sees `Panicked`).
    pub async fn debit_and_panic(&mut self, amount: i64) -> Result<i64, Insufficient> {
        self.balance -= amount;
        panic!("injected panic in a saga step")
    }

    /// The balance.
    pub async fn balance(&self) -> i64 {
        self.balance
    }
}

/// The transfer's own error: it cannot implement `From<CallError<Insufficient>>` (both are
/// foreign to this impl's trait), which is what `propagate` is for.
#[derive(Debug)]
pub enum TransferError {
    /// The debited purse refused.
    Refused(Insufficient),
    /// A purse did not answer (any runtime failure of the call).
    Unavailable(CallError),
}

impl From<Insufficient> for TransferError {
    fn from(e: Insufficient) -> Self {
        TransferError::Refused(e)
    }
}

/// A transfer saga whose steps are calls with `?`.
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "transfer_q")]
pub struct Transfer {
    /// Transfers this actor completed (a failed one is rolled back).
    done: u32,
}

#[handlers]
impl Transfer {
    /// The saga: debit `from` (panicking there if `panic`), credit `to`.
    pub async fn run(
        &mut self,
        ctx: &Context,
        from: String,
        to: String,
        amount: i64,
        panic: bool,
    ) -> Result<i64, TransferError> {
        self.done += 1;
        let purse = ctx.get::<Purse>(&from);
        let step = if panic {
            purse.debit_and_panic(amount).await
        } else {
            purse.debit(amount).await
        };
        let left = step.map_err(|e| e.propagate(TransferError::Unavailable))?;
        ctx.get::<Purse>(&to)
            .credit(amount)
            .await
            .map_err(TransferError::Unavailable)?;
        Ok(left)
    }

    /// Transfers completed.
    pub async fn done(&self) -> u32 {
        self.done
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_errors_and_failures_of_a_step_reach_the_callers_error_type() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::builder()
        .path(dir.path())
        .register::<Purse>()
        .register::<Transfer>()
        .open()
        .await
        .unwrap();
    rt.get::<Purse>("a").credit(10).await.unwrap();
    let transfer = rt.get::<Transfer>("t");

    // Every step answers: the saga completes.
    let left = transfer
        .run("a".into(), "b".into(), 4, false)
        .await
        .unwrap();
    assert_eq!(left, 6);

    // The debited purse's own error arrives as the transfer's, through `From`.
    match transfer.run("a".into(), "b".into(), 50, false).await {
        Err(CallError::Handler(TransferError::Refused(e))) => {
            assert_eq!(e, Insufficient { balance: 6 })
        }
        other => panic!("expected the purse's refusal, got {other:?}"),
    }

    // A call that never reached a handler is "unavailable", with the reason kept.
    match transfer.run(String::new(), "b".into(), 1, false).await {
        Err(CallError::Handler(TransferError::Unavailable(CallError::InvalidKey(
            KeyError::Empty,
        )))) => {}
        other => panic!("expected the invalid key as unavailable, got {other:?}"),
    }

    // So is a step that panicked.
    match transfer.run("a".into(), "b".into(), 1, true).await {
        Err(CallError::Handler(TransferError::Unavailable(CallError::Panicked {
            actor: "purse",
            handler: "debit_and_panic",
        }))) => {}
        other => panic!("expected the panic as unavailable, got {other:?}"),
    }

    // The failed transfers were rolled back; the purses saw only the one that completed.
    assert_eq!(transfer.done().await.unwrap(), 1);
    assert_eq!(rt.get::<Purse>("a").balance().await.unwrap(), 6);
    assert_eq!(rt.get::<Purse>("b").balance().await.unwrap(), 4);
    rt.shutdown().await.unwrap();
}

#[test]
fn map_handler_changes_only_the_handlers_error() {
    let refused: CallError<Insufficient> = CallError::Handler(Insufficient { balance: 3 });
    assert!(matches!(
        refused.map_handler(|e| e.balance),
        CallError::Handler(3)
    ));
    let timeout: CallError<Insufficient> = CallError::Timeout(std::time::Duration::from_millis(7));
    assert!(matches!(
        timeout.map_handler(|e| e.balance),
        CallError::Timeout(d) if d == std::time::Duration::from_millis(7)
    ));
}
