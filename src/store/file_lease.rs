//! `FileStore` leases: an OS lock on `KEY.lease`, which the OS ends when its
//! holder dies, and, on Unix, the lease time written in the file, after which
//! a waiter takes the place of a holder that is alive but stalled (stopped
//! with Ctrl-Z, in a debugger, hung): the `TokenStore` contract says a lease
//! ends after its time, and without it every process of the host would wait
//! its whole retry deadline on every acquisition.

use std::fs::{File, TryLockError};
use std::io;
use std::path::Path;
use std::time::Duration;

/// Opens a store file user-only, never through a link (`true`: create it new).
pub(super) type Opener = fn(&Path, bool) -> io::Result<File>;

/// The lease at `path` for `ttl`: the locked file, or `None` while another
/// holder has it (and, on Unix, its lease time has not passed).
pub(super) fn take(path: &Path, ttl: Duration, open: Opener) -> io::Result<Option<File>> {
    let file = open(path, false)?;
    pause(Stage::Opened);
    if !try_lock(&file)? {
        return take_over(path, file, ttl, open);
    }
    pause(Stage::Locked);
    mark(&file, ttl)?;
    confirm(path, file, open)
}

/// Tries the exclusive lock of `file`: whether it was taken (`false`:
/// another holder has it).
pub(super) fn try_lock(file: &File) -> io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Writes until when the lease lasts: Unix milliseconds by this host's
/// clock, which every process sharing the directory reads.
#[cfg(unix)]
fn mark(file: &File, ttl: Duration) -> io::Result<()> {
    use std::os::unix::fs::FileExt as _;
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let until = crate::clock::system_now_ms().saturating_add(ttl_ms);
    file.set_len(0)?;
    file.write_all_at(until.to_string().as_bytes(), 0)
}

/// Erases the lease time before `file` is let go: a released lease leaves
/// no time behind that a waiter could read as a stalled holder's while the
/// next holder (or one of an older version, which writes none) has it.
#[cfg(unix)]
pub(super) fn clear(file: &File) -> io::Result<()> {
    file.set_len(0)
}

/// Windows: no lease time (see [`mark`]).
#[cfg(not(unix))]
pub(super) fn clear(_file: &File) -> io::Result<()> {
    Ok(())
}

/// Windows locks keep others from reading the file: no lease time there.
#[cfg(not(unix))]
fn mark(_file: &File, _ttl: Duration) -> io::Result<()> {
    Ok(())
}

/// Whether the lease time in `file` has passed. No time (a holder that has
/// not written it yet, an older version's lease) is not expired.
#[cfg(unix)]
fn expired(file: &File) -> bool {
    use std::os::unix::fs::FileExt as _;
    let mut buf = [0u8; 24];
    let Ok(n) = file.read_at(&mut buf, 0) else {
        return false;
    };
    std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .is_some_and(|until| crate::clock::system_now_ms() >= until)
}

/// The place of the holder of `held` (the file at `path`, locked by
/// someone else) if its lease time has passed: under a second lock, so one
/// waiter decides, the file is moved away (the stalled holder keeps its
/// lock on it, on nothing anyone looks at) and a new lease file is locked.
#[cfg(unix)]
fn take_over(path: &Path, held: File, ttl: Duration, open: Opener) -> io::Result<Option<File>> {
    if !expired(&held) {
        return Ok(None);
    }
    let Some(_guard) = guard(path, open, 1)? else {
        return Ok(None);
    };
    // Released meanwhile: an ordinary take, if it is still the lease file.
    if try_lock(&held)? {
        mark(&held, ttl)?;
        return Ok(is_at(path, &held)?.then_some(held));
    }
    // Still the file found expired (no other waiter took over), still expired?
    if !is_at(path, &held)? || !expired(&held) {
        return Ok(None);
    }
    let aside = path.with_extension(format!("{}.stale", super::Lease::random_owner()));
    std::fs::rename(path, &aside)?;
    let _ = std::fs::remove_file(&aside);
    let fresh = match open(path, true) {
        Ok(file) => file,
        // A waiter's ordinary take created it since the move: its lease.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(None),
        Err(e) => return Err(e),
    };
    if !try_lock(&fresh)? {
        return Ok(None);
    }
    mark(&fresh, ttl)?;
    tracing::warn!(
        target: "aim_token::store",
        lease = %path.display(),
        "took over a lease held past its lease time (its process is stopped or hung)"
    );
    Ok(Some(fresh))
}

/// Windows: the lease ends when its holder releases it or exits.
#[cfg(not(unix))]
fn take_over(_path: &Path, _held: File, _ttl: Duration, _open: Opener) -> io::Result<Option<File>> {
    Ok(None)
}

/// `file`, locked and marked, if it is still the lease file at `path`,
/// checked under the takeover lock. Without it, two processes could both
/// hold the lease: one that opened the file before a waiter moved it aside
/// (and locked it once its stalled holder let go), or one that had locked
/// it but not yet written its lease time when a waiter read the time of
/// the lease before (long expired) and took over.
#[cfg(unix)]
fn confirm(path: &Path, file: File, open: Opener) -> io::Result<Option<File>> {
    // A takeover holds this lock for a few system calls: wait that long.
    let Some(_guard) = guard(path, open, GUARD_TRIES)? else {
        return Ok(None);
    };
    Ok(is_at(path, &file)?.then_some(file))
}

/// Windows: lease files are never moved (no takeover), so a locked one is
/// the lease.
#[cfg(not(unix))]
fn confirm(_path: &Path, file: File, _open: Opener) -> io::Result<Option<File>> {
    Ok(Some(file))
}

/// How often [`confirm`] tries the takeover lock, a millisecond apart.
#[cfg(unix)]
const GUARD_TRIES: u32 = 10;

/// The takeover lock of the lease at `path`, tried `tries` times a
/// millisecond apart (`None`: another process holds it).
#[cfg(unix)]
fn guard(path: &Path, open: Opener, tries: u32) -> io::Result<Option<File>> {
    let guard = open(&path.with_extension("steal"), false)?;
    for attempt in 1..=tries {
        if try_lock(&guard)? {
            return Ok(Some(guard));
        }
        if attempt < tries {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(None)
}

/// Whether `file` is the one at `path` (not moved aside, not replaced).
#[cfg(unix)]
fn is_at(path: &Path, file: &File) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt as _;
    let here = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let seen = file.metadata()?;
    Ok((here.dev(), here.ino()) == (seen.dev(), seen.ino()))
}

/// Where a test stops a take to let another process act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The lease file is open, not yet locked.
    Opened,
    /// The lease file is locked, its lease time not yet written.
    Locked,
}

#[cfg(not(test))]
fn pause(_stage: Stage) {}

/// What a test runs when this thread's take reaches a stage.
#[cfg(test)]
type Hook = Box<dyn FnMut(Stage)>;

#[cfg(test)]
thread_local! {
    static PAUSE: std::cell::RefCell<Option<Hook>> = const { std::cell::RefCell::new(None) };
}

#[cfg(test)]
fn pause(stage: Stage) {
    let hook = PAUSE.with(|p| p.borrow_mut().take());
    if let Some(mut hook) = hook {
        hook(stage);
        PAUSE.with(|p| *p.borrow_mut() = Some(hook));
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};

    fn open(path: &Path, create_new: bool) -> io::Result<File> {
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if create_new {
            options.create_new(true);
        } else {
            options.create(true).truncate(false);
        }
        options.open(path)
    }

    fn lease_path(tag: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "aim-token-lease-{tag}-{}",
            super::super::Lease::random_owner()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        (dir.join("k.lease"), dir)
    }

    /// Runs `hook` once, when this thread's next take reaches `at`.
    fn at_stage(at: Stage, hook: impl FnOnce() + 'static) {
        let mut hook = Some(hook);
        PAUSE.with(|p| {
            *p.borrow_mut() = Some(Box::new(move |stage| {
                if stage == at {
                    if let Some(hook) = hook.take() {
                        hook();
                    }
                }
            }));
        });
    }

    /// Another process's take, run to its end on its own thread.
    fn other_take(path: &Path, ttl: Duration) -> Option<File> {
        let path = path.to_owned();
        std::thread::spawn(move || take(&path, ttl, open).unwrap())
            .join()
            .unwrap()
    }

    /// The fleet restarts after a quiet night: the lease file still holds
    /// the lease time of the last holder, long passed. One process locks
    /// it; before it writes its own lease time, another reads the old one
    /// and takes over. Only one of them may hold the lease.
    #[test]
    fn a_holder_that_just_locked_a_file_with_an_old_lease_time_and_a_waiter_do_not_both_hold_it() {
        let (path, dir) = lease_path("old-time");
        std::fs::write(&path, b"1").unwrap();
        let waiter = Arc::new(Mutex::new(None));
        let (shared, at) = (waiter.clone(), path.clone());
        at_stage(Stage::Locked, move || {
            *shared.lock().unwrap() = Some(other_take(&at, Duration::from_secs(10)));
        });
        let locker = take(&path, Duration::from_secs(10), open).unwrap();
        let waiter = waiter.lock().unwrap().take().expect("the waiter ran");
        assert!(
            !(locker.is_some() && waiter.is_some()),
            "both processes hold the lease"
        );
        assert!(
            waiter.is_some(),
            "the waiter took the expired-looking lease"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A process opened the lease file of a stalled holder; a waiter moved
    /// that file aside and took the lease; the stalled holder then let go
    /// of its lock. The first process must not now lock the moved file and
    /// believe it holds the lease as well.
    #[test]
    fn a_process_that_opened_the_lease_file_before_a_takeover_does_not_hold_the_moved_file() {
        let (path, dir) = lease_path("moved");
        let stalled = take(&path, Duration::from_millis(1), open).unwrap();
        assert!(stalled.is_some());
        std::thread::sleep(Duration::from_millis(20));
        let taker = Arc::new(Mutex::new(None));
        let (shared, at) = (taker.clone(), path.clone());
        at_stage(Stage::Opened, move || {
            *shared.lock().unwrap() = Some(other_take(&at, Duration::from_secs(10)));
            drop(stalled);
        });
        let late = take(&path, Duration::from_secs(10), open).unwrap();
        let taker = taker.lock().unwrap().take().expect("the takeover ran");
        assert!(taker.is_some(), "the stalled holder's lease was taken over");
        assert!(late.is_none(), "two processes hold the lease");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Many threads (each with its own open file, as processes have) take
    /// the lease over and over; each holder leaves the lease time of a
    /// lease long past behind when it lets go, so every next take races
    /// with waiters that see it expired. Never two holders at once.
    /// (Before `confirm`: 5 to 47 overlaps in 800 takes.)
    #[test]
    fn holders_of_leases_with_passed_times_never_overlap() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (path, dir) = lease_path("overlap");
        let inside = Arc::new(AtomicUsize::new(0));
        let (overlaps, taken) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (path, inside) = (path.clone(), inside.clone());
                let (overlaps, taken) = (overlaps.clone(), taken.clone());
                std::thread::spawn(move || {
                    // A process preempted between its lock and its lease
                    // time, as a loaded machine does now and then.
                    PAUSE.with(|p| {
                        *p.borrow_mut() = Some(Box::new(|stage| {
                            if stage == Stage::Locked {
                                std::thread::sleep(Duration::from_micros(300));
                            }
                        }));
                    });
                    for _ in 0..200 {
                        let Some(file) = take(&path, Duration::from_secs(60), open).unwrap() else {
                            std::thread::yield_now();
                            continue;
                        };
                        taken.fetch_add(1, Ordering::Relaxed);
                        if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                            overlaps.fetch_add(1, Ordering::Relaxed);
                        }
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                        use std::os::unix::fs::FileExt as _;
                        file.set_len(0).unwrap();
                        file.write_all_at(b"1", 0).unwrap();
                        drop(file);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(taken.load(Ordering::Relaxed) > 0);
        assert_eq!(overlaps.load(Ordering::Relaxed), 0, "two holders at once");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The ordinary cases still hold: a free lease is taken, a live one is
    /// not, an expired one is taken over once.
    #[test]
    fn free_live_and_expired_leases() {
        let (path, dir) = lease_path("plain");
        let first = take(&path, Duration::from_secs(10), open).unwrap();
        assert!(first.is_some());
        assert!(other_take(&path, Duration::from_secs(10)).is_none());
        drop(first);
        let short = take(&path, Duration::from_millis(1), open).unwrap();
        assert!(short.is_some());
        std::thread::sleep(Duration::from_millis(20));
        let over = other_take(&path, Duration::from_secs(10));
        assert!(over.is_some(), "an expired lease is taken over");
        assert!(other_take(&path, Duration::from_secs(10)).is_none());
        drop((short, over));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
