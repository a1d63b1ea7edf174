//! Finding a substring in a command line, as both the agent's selectors and
//! the reclaimer's rules match `argv`: against the arguments joined with
//! single spaces.

use std::cell::RefCell;

/// The first of `substrings` (in their order) found in `argv` joined with
/// single spaces. Runs for every exec (in the agent, under the fan-out's
/// lock), so it joins only when there is more than one argument, into a
/// per-thread buffer (which keeps the capacity of the longest command line,
/// itself bounded by the agent's read limit).
pub fn find_in<'a>(argv: &[String], substrings: &'a [String]) -> Option<&'a String> {
    thread_local! {
        static JOINED: RefCell<String> = const { RefCell::new(String::new()) };
    }
    let find = |line: &str| substrings.iter().find(|s| line.contains(s.as_str()));
    match argv {
        [] => None,
        [only] => find(only),
        _ => JOINED.with(|buf| {
            let mut joined = buf.borrow_mut();
            joined.clear();
            for (i, arg) in argv.iter().enumerate() {
                if i > 0 {
                    joined.push(' ');
                }
                joined.push_str(arg);
            }
            find(&joined)
        }),
    }
}
