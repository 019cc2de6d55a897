//! `rkllm_abort` from another thread, as the daemon's event loop calls it: how long the run takes
//! to end once aborted during prefill and during decode, and whether FINISH follows.
//!
//! The daemon declares the runtime wedged when an aborted run has not ended within
//! `abort-grace`: a later end is a failure here. Whether FINISH comes it handles either way.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use super::session::{ms, Observed, Session};
use super::watchdog::Watchdog;
use crate::config::Config;
use crate::doctor::Finding;
use crate::runtime::Flow;

/// A cap the run reaches only if the abort is ignored (about 8 s on a board at 16 tokens/s).
const CAP: u32 = 128;
/// A prompt whose prefill takes a while and whose answer is long.
const DECODE_PROMPT: &str = "Count from one to two hundred in words, one number per line.";
/// After the run starts, the prefill abort waits this long.
const PREFILL_DELAY: Duration = Duration::from_millis(20);

pub fn check(cfg: &Config, watchdog: &Watchdog) -> Vec<Finding> {
    let mut s = match Session::open(cfg, watchdog, CAP, true) {
        Ok(s) => s,
        Err(e) => {
            let why = format!("no handle: {e}");
            return ["abort-prefill", "abort-decode", "abort-finish"]
                .map(|name| Finding::unknown(name, why.clone()))
                .to_vec();
        }
    };
    let prefill = during_prefill(&mut s);
    let decode = during_decode(&mut s);
    let finish = finish([&prefill, &decode]);
    vec![
        judge("abort-prefill", &prefill, cfg.abort_grace),
        judge("abort-decode", &decode, cfg.abort_grace),
        finish,
    ]
}

/// A run and when `rkllm_abort` was called during it (`Err`: not called, and why).
struct Aborted {
    run: Observed,
    at: Result<Instant, String>,
}

/// A long prompt (the words of the decode prompt many times) aborted shortly after it starts,
/// unless a token came first: then the run is stopped instead and nothing is measured. The
/// abort is never made once the run is over (a runtime might keep it for the next run).
fn during_prefill(s: &mut Session) -> Aborted {
    const PREFILL: u8 = 0;
    const ABORTING: u8 = 1;
    const OUTPUT: u8 = 2;
    let prompt = format!(" {DECODE_PROMPT}").repeat(24);
    let handle = s.rt.abort_handle();
    let phase = Arc::new(AtomicU8::new(PREFILL));
    let (tx, rx) = mpsc::channel::<()>();
    let aborter = {
        let phase = Arc::clone(&phase);
        thread::spawn(move || {
            rx.recv().map_err(|_| "the run did not start".to_owned())?;
            thread::sleep(PREFILL_DELAY);
            if phase
                .compare_exchange(PREFILL, ABORTING, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                return Err(format!(
                    "the prefill ended within {} ms, before the abort",
                    ms(PREFILL_DELAY)
                ));
            }
            let at = Instant::now();
            handle.abort().map_err(|e| e.to_string())?;
            Ok(at)
        })
    };
    let _ = s.rt.clear_kv_cache(false);
    let _ = tx.send(());
    let run = s.run(&prompt, false, CAP, &mut |_| match phase.compare_exchange(
        PREFILL,
        OUTPUT,
        Ordering::SeqCst,
        Ordering::SeqCst,
    ) {
        Ok(_) => Flow::Stop,
        Err(_) => Flow::Continue,
    });
    let at = aborter
        .join()
        .unwrap_or_else(|_| Err("the aborting thread panicked".to_owned()));
    Aborted { run, at }
}

/// Aborted as soon as the first token arrives.
fn during_decode(s: &mut Session) -> Aborted {
    let handle = s.rt.abort_handle();
    let (tx, rx) = mpsc::channel::<()>();
    let aborter = thread::spawn(move || {
        rx.recv().map_err(|_| "no token came".to_owned())?;
        let at = Instant::now();
        handle.abort().map_err(|e| e.to_string())?;
        Ok(at)
    });
    let _ = s.rt.clear_kv_cache(false);
    let mut first = Some(tx);
    let run = s.run(DECODE_PROMPT, false, CAP, &mut |_| {
        if let Some(tx) = first.take() {
            let _ = tx.send(());
        }
        Flow::Continue
    });
    drop(first);
    let at = aborter
        .join()
        .unwrap_or_else(|_| Err("the aborting thread panicked".to_owned()));
    Aborted { run, at }
}

fn judge(name: &'static str, a: &Aborted, grace: Duration) -> Finding {
    let at = match &a.at {
        Ok(at) => *at,
        Err(why) => return Finding::unknown(name, format!("no abort observed: {why}")),
    };
    let late = a.run.returned.saturating_duration_since(at);
    let facts = format!(
        "the run ended {} ms after rkllm_abort, after {} token(s)",
        ms(late),
        a.run.tokens
    );
    if a.run.tokens >= CAP {
        Finding::fail(
            name,
            format!("{facts}: it ran to its cap of {CAP}, the abort was ignored"),
            "rkllmd cancels runs with rkllm_abort; send us this report",
        )
    } else if late > grace {
        Finding::fail(
            name,
            format!("{facts}, later than abort-grace ({} ms)", ms(grace)),
            "rkllmd would declare the runtime wedged; raise abort-grace above this and send us this report",
        )
    } else {
        Finding::ok(name, format!("{facts} (abort-grace {} ms)", ms(grace)))
    }
}

/// Whether FINISH followed the aborts that landed.
fn finish(runs: [&Aborted; 2]) -> Finding {
    const NAME: &str = "abort-finish";
    let seen: Vec<bool> = runs
        .iter()
        .filter(|a| a.at.is_ok())
        .map(|a| a.run.perf().is_some())
        .collect();
    let said = match (seen.iter().all(|f| *f), seen.iter().any(|f| *f)) {
        _ if seen.is_empty() => return Finding::unknown(NAME, "no abort landed during a run"),
        (true, _) => "yes",
        (false, false) => "no",
        (false, true) => "sometimes",
    };
    Finding::ok(
        NAME,
        format!("FINISH follows rkllm_abort: {said}; rkllmd copes either way"),
    )
}
