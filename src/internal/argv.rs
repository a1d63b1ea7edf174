//! Finding a substring in a command line, as both the agent's selectors and
//! the reclaimer's rules match `argv`: against the arguments joined with
//! single spaces, the whole line even when the record carries only its start.

use std::cell::RefCell;

use crate::proto::Process;

/// The first of `substrings` (in their order) that `p`'s command line holds:
/// found in `argv` joined with single spaces, or, for a line the agent cut
/// (`argv_truncated`), listed in `argv_matches`, which the agent found past
/// the cut. Runs for every exec (in the agent, under the fan-out's lock), so
/// it joins only when there is more than one argument, into a per-thread
/// buffer (which keeps the capacity of the longest command line, itself
/// bounded by the agent's read limit).
pub fn find_in<'a>(p: &Process, substrings: &'a [String]) -> Option<&'a String> {
    thread_local! {
        static JOINED: RefCell<String> = const { RefCell::new(String::new()) };
    }
    let find = |line: &str| {
        let past_cut = |s: &String| p.argv_truncated && p.argv_matches.contains(s);
        substrings
            .iter()
            .find(|s| line.contains(s.as_str()) || past_cut(s))
    };
    match p.argv.as_slice() {
        _ if substrings.is_empty() => None,
        [only] => find(only),
        argv => JOINED.with(|buf| {
            let mut joined = buf.borrow_mut();
            joined.clear();
            for arg in argv {
                joined.push_str(arg);
                joined.push(' ');
            }
            joined.pop();
            find(&joined)
        }),
    }
}
