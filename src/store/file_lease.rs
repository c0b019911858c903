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
    if !try_lock(&file)? {
        return take_over(path, file, ttl, open);
    }
    mark(&file, ttl)?;
    Ok(Some(file))
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
    use std::os::unix::fs::MetadataExt as _;
    if !expired(&held) {
        return Ok(None);
    }
    let guard = open(&path.with_extension("steal"), false)?;
    if !try_lock(&guard)? {
        return Ok(None);
    }
    // Released meanwhile: an ordinary take.
    if try_lock(&held)? {
        mark(&held, ttl)?;
        return Ok(Some(held));
    }
    // Still the file found expired (no other waiter took over), still expired?
    let here = std::fs::symlink_metadata(path)?;
    let seen = held.metadata()?;
    if (here.dev(), here.ino()) != (seen.dev(), seen.ino()) || !expired(&held) {
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
