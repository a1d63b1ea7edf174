//! The `/proc` mount as the agent reads it: where it is, the command-line
//! limit, the bounds on a read ([`crate::procfs::watchdog`]) and the
//! redaction applied before a record leaves the agent. Built once in `main`
//! and shared by the detectors and the snapshots, so none of them can read
//! or redact differently.

use execwatch::proto::Process;

use crate::procfs::bounds::Bounds;
use crate::procfs::reader::{Exhausted, ProcReader};
use crate::procfs::redaction::Redactor;

/// Where and how processes are read.
pub struct ProcMount {
    /// The mount's path, for messages.
    pub root: String,
    /// Never read with: each reader is a copy with its own buffer.
    template: ProcReader,
    redactor: Option<Redactor>,
    /// How long one process's read may take, and what is stuck.
    pub bounds: Bounds,
}

impl ProcMount {
    /// Opens the `/proc` mount at `root`. Command lines are read up to
    /// `max_argv_bytes`; `redactor`, if any, is applied to every record.
    pub fn open(
        root: &str,
        max_argv_bytes: usize,
        redactor: Option<Redactor>,
        bounds: Bounds,
    ) -> Result<Self, nix::errno::Errno> {
        Ok(Self {
            root: root.to_string(),
            template: ProcReader::open(root, max_argv_bytes)?,
            redactor,
            bounds,
        })
    }

    /// A reader for one thread (a copy of the mount's descriptor).
    pub fn reader(&self) -> Result<ProcReader, Exhausted> {
        self.template.try_clone()
    }

    /// Makes a record fit to leave the agent: with redaction configured,
    /// secrets in its command line are replaced.
    pub(in crate::procfs) fn finish(&self, mut p: Process) -> Process {
        if let Some(redactor) = &self.redactor {
            redactor.redact(&mut p);
        }
        p
    }
}
