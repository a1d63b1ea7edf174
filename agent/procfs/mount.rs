//! The one description of where and how the agent reads processes: the
//! `/proc` mount, the command-line limit, the redaction applied before a
//! record leaves the agent, and the bound on how long one read may take.
//! Built once in `main` and shared by the netlink detector, the poll
//! detector and the snapshots, so none of them can read or redact
//! differently.

use execwatch::proto::Process;

use crate::procfs::bounded::Bounds;
use crate::procfs::reader::{Exhausted, OpenError, ProcReader};
use crate::procfs::redaction::Redactor;

/// Where and how processes are read.
pub struct ProcSource {
    root: String,
    /// Never read with: each reader is a copy with its own buffer.
    template: ProcReader,
    redactor: Option<Redactor>,
    bounds: Bounds,
}

impl ProcSource {
    /// Opens the `/proc` mount at `root`. Command lines are read up to
    /// `max_argv_bytes`; `redactor`, if any, is applied to every record.
    pub fn open(
        root: &str,
        max_argv_bytes: usize,
        redactor: Option<Redactor>,
        bounds: Bounds,
    ) -> Result<Self, OpenError> {
        Ok(Self {
            root: root.to_string(),
            template: ProcReader::open(root, max_argv_bytes)?,
            redactor,
            bounds,
        })
    }

    /// The mount's path, for messages.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// A reader for one thread (a copy of the mount's descriptor).
    pub fn reader(&self) -> Result<ProcReader, Exhausted> {
        self.template.try_clone()
    }

    /// How long one process's read may take, and what is stuck.
    pub fn bounds(&self) -> &Bounds {
        &self.bounds
    }

    /// Makes a record fit to leave the agent: with redaction configured,
    /// secrets in its command line are replaced. Every record a detector
    /// publishes or a snapshot lists goes through here.
    pub fn finish(&self, p: &mut Process) {
        if let Some(redactor) = &self.redactor {
            redactor.redact(p);
        }
    }
}
