//! The loader: a few threads that run the store reads a turn waits for (its actor's record,
//! the check of a retried delivery, a page of keys), off the async workers.
//!
//! One read is a few microseconds; handing it to Tokio's blocking pool costs more: a task
//! allocated per read, and a parked thread woken for it, since a blocking-pool thread sleeps
//! as soon as it is done. A loader that finished a read spins and yields briefly before it
//! sleeps (crossbeam's backoff), so under load reads are handed over without a wake-up.

use std::io;

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// A read to run, with its answer's sending end.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// The sending end of the loader threads' queue. Dropping it stops the threads once the
/// queue is empty.
pub(crate) struct Loader {
    tx: Sender<Job>,
}

impl Loader {
    /// Starts `threads` loader threads sharing a queue of at most `capacity` reads.
    pub(crate) fn start(threads: usize, capacity: usize) -> io::Result<Loader> {
        let (tx, rx) = crossbeam_channel::bounded::<Job>(capacity);
        for i in 0..threads.max(1) {
            let rx: Receiver<Job> = rx.clone();
            std::thread::Builder::new()
                .name(format!("gears-loader-{i}"))
                .spawn(move || {
                    // A job never unwinds (its caller wraps the read), so the thread lives
                    // until the queue closes.
                    for job in rx {
                        job();
                    }
                })?;
        }
        Ok(Loader { tx })
    }

    /// Queues `job` for a loader thread; gives it back when the queue is full.
    pub(crate) fn run(&self, job: Job) -> Result<(), Job> {
        self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(job) | TrySendError::Disconnected(job) => job,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn jobs_run_on_loader_threads_and_a_full_queue_gives_the_job_back() {
        let loader = Loader::start(1, 1).unwrap();
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        // The only thread takes this job and holds it until released.
        let blocking: Job = Box::new(move || {
            let name = std::thread::current().name().map(str::to_owned);
            started_tx.send(name).unwrap();
            release_rx.recv().unwrap();
        });
        assert!(loader.run(blocking).is_ok());
        assert_eq!(started.recv().unwrap().as_deref(), Some("gears-loader-0"));
        // One job fits in the queue; the next is given back, to run elsewhere.
        let (done_tx, done) = mpsc::channel();
        let queued: Job = Box::new(move || done_tx.send("queued").unwrap());
        assert!(loader.run(queued).is_ok());
        let refused: Job = Box::new(|| panic!("a refused job must not run here"));
        assert!(loader.run(refused).is_err());
        release.send(()).unwrap();
        assert_eq!(done.recv().unwrap(), "queued");
    }
}
