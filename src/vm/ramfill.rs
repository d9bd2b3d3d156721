//! A snapshot's RAM copied into a new guest's memfd while its QEMU starts.

use std::path::PathBuf;

use super::memory::GuestMemory;
use super::trace::Trace;
use super::VmError;

/// A snapshot's RAM being copied into the guest's memfd while QEMU starts
/// (QEMU maps the memfd shared, so it sees the pages once written). The
/// copy and QEMU's start each take ~40 ms under TCG; in parallel a restore
/// is that much shorter (see BENCHMARKS.md, issue 12).
#[derive(Clone)]
pub(super) struct RamFill(tokio::sync::watch::Receiver<Option<Result<(), RamError>>>);

/// Why a RAM copy failed (an `io::Error` cannot be cloned to every waiter).
#[derive(Clone)]
struct RamError(std::io::ErrorKind, String);

impl RamFill {
    /// Starts copying `src` (a snapshot's RAM file) into `memory`.
    pub(super) fn start(
        memory: &GuestMemory,
        src: PathBuf,
        trace: Trace,
    ) -> Result<RamFill, VmError> {
        let memory = memory.try_clone()?;
        let (tx, rx) = tokio::sync::watch::channel(None);
        tokio::task::spawn_blocking(move || {
            let done = memory
                .load(&src)
                .map_err(|e| RamError(e.kind(), e.to_string()));
            trace.mark("RAM loaded");
            let _ = tx.send(Some(done));
        });
        Ok(RamFill(rx))
    }

    /// Waits for the copy; an error says what went wrong.
    pub(super) async fn done(mut self) -> Result<(), VmError> {
        let outcome = self
            .0
            .wait_for(Option::is_some)
            .await
            .map_err(|_| VmError::Infra("the task loading the snapshot's RAM died".into()))?
            .clone();
        match outcome {
            Some(Ok(())) => Ok(()),
            Some(Err(RamError(kind, e))) => Err(VmError::Io(std::io::Error::new(
                kind,
                format!("loading the snapshot's RAM: {e}"),
            ))),
            None => Err(VmError::Infra(
                "the task loading the snapshot's RAM died".into(),
            )),
        }
    }
}
