//! `FileStore`: the shared store in a directory, for the processes of one
//! host (scheduled jobs, scripts, services).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::file_lease;
use super::seal::MAX_VALUE;
use super::{BoxFuture, Lease, TokenStore};
use crate::error::{Error, Result};

/// A token store in a directory: one sealed file per token, replaced
/// atomically (written to a temporary file, then renamed), created
/// user-only (mode 0600 in a 0700 directory on Unix; on Windows the files
/// inherit the per-user ACL of the profile directory). Leases are OS file
/// locks, released by the OS when their holder dies.
///
/// Use a local directory: file locks over NFS or SMB shares are not
/// reliable. Neither constructor touches the file system; the directory is
/// created on the first write.
///
/// ```no_run
/// # fn run() -> Result<(), aim_token::Error> {
/// use aim_token::store::FileStore;
///
/// let shared = FileStore::new("/var/cache/mes-reporting");
/// let mine = FileStore::user_cache()?; // e.g. ~/.cache/aim-token
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: Arc<PathBuf>,
}

impl FileStore {
    /// A store in `dir` (created on first use).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileStore {
            dir: Arc::new(dir.into()),
        }
    }

    /// A store in the current user's cache directory: `$XDG_CACHE_HOME/aim-token`
    /// or `~/.cache/aim-token` on Linux and other Unix systems,
    /// `~/Library/Caches/aim-token` on macOS, `%LOCALAPPDATA%\aim-token` on
    /// Windows. Fails only when the OS says nothing about where that is.
    pub fn user_cache() -> Result<Self> {
        user_cache_dir(|name| std::env::var_os(name).map(PathBuf::from))
            .map(|dir| FileStore::new(dir.join("aim-token")))
            .ok_or_else(|| {
                Error::config(
                    "no per-user cache directory (HOME, XDG_CACHE_HOME or LOCALAPPDATA is not set): set AIM_TOKEN_STORE=file:DIR, or use --no-cache",
                )
            })
    }

    /// The directory of this store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &str, suffix: &str) -> PathBuf {
        self.dir.join(format!("{key}.{suffix}"))
    }

    /// Runs blocking file I/O off the async threads. Dropping the future
    /// (the store timeout) cannot stop a thread, so the job is told through
    /// [`Abandoned`] and must not change anything afterwards.
    fn blocking<T: Send + 'static>(
        &self,
        job: impl FnOnce(&FileStore, &Abandoned) -> io::Result<T> + Send + 'static,
    ) -> BoxFuture<'static, io::Result<T>> {
        let store = self.clone();
        let abandoned = Abandoned::default();
        let on_drop = abandoned.clone().on_drop();
        Box::pin(async move {
            let result = tokio::task::spawn_blocking(move || job(&store, &abandoned))
                .await
                .map_err(io::Error::other)?;
            drop(on_drop);
            result
        })
    }

    fn ensure_dir(&self) -> io::Result<()> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&*self.dir)?;
        self.check_dir()
    }

    /// Refuses a directory another user owns or may write to: they could
    /// replace, plant or link entries. (Windows: the profile ACL decides.)
    fn check_dir(&self) -> io::Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt as _;
            let meta = fs::metadata(&*self.dir)?;
            let dir = self.dir.display();
            if meta.uid() != rustix::process::geteuid().as_raw() {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("the token store directory {dir} belongs to another user (uid {}): use a directory of your own (AIM_TOKEN_STORE=file:DIR)", meta.uid()),
                ));
            }
            if meta.mode() & 0o022 != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("the token store directory {dir} is writable by other users (mode {:o}): chmod 700 {dir}", meta.mode() & 0o777),
                ));
            }
        }
        Ok(())
    }

    /// Opens `path` for writing, user-only, creating it if needed; never
    /// through a symbolic link.
    fn open_private(path: &Path, create_new: bool) -> io::Result<File> {
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if create_new {
            options.create_new(true);
        } else {
            options.create(true).truncate(false);
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600).custom_flags(no_follow());
        }
        options.open(path)
    }

    /// The entry at `path` (`None` if there is none): a regular file, not
    /// followed through a link, read up to one byte past the largest value
    /// the crate opens (a larger one is a miss anyway).
    fn read_entry(path: &Path) -> io::Result<Option<Vec<u8>>> {
        let mut options = OpenOptions::new();
        options.read(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::custom_flags(
            &mut options,
            // Non-blocking: a FIFO planted there does not hang the open.
            no_follow() | rustix::fs::OFlags::NONBLOCK.bits() as i32,
        );
        let file = match options.open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if !file.metadata()?.is_file() {
            return Err(io::Error::other(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let mut bytes = Vec::new();
        let limit = u64::try_from(MAX_VALUE)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        file.take(limit).read_to_end(&mut bytes)?;
        Ok(Some(bytes))
    }

    /// Holds the write lock of `key` (short: around a compare-and-rename or
    /// a compare-and-delete, so neither replaces nor removes a newer value).
    /// Waits for another holder only until the caller gave up: a write that
    /// got the lock after its timeout would land unseen, perhaps with a
    /// token the client has meanwhile seen refused.
    fn write_lock(&self, key: &str, abandoned: &Abandoned) -> io::Result<File> {
        self.ensure_dir()?;
        let file = Self::open_private(&self.path(key, "wlock"), false)?;
        while !file_lease::try_lock(&file)? {
            if abandoned.is_set() {
                return Err(abandoned.error());
            }
            std::thread::sleep(LOCK_POLL);
        }
        // Given up on while the lock was being taken: change nothing.
        if abandoned.is_set() {
            return Err(abandoned.error());
        }
        Ok(file)
    }

    /// Writes `value` to a temporary file, then renames it into place
    /// under the write lock: always (`current: None`), or only if the entry
    /// holds what `current` says (`Some(None)`: no entry).
    fn write_entry(
        &self,
        key: &str,
        current: Option<Option<&[u8]>>,
        value: &[u8],
        abandoned: &Abandoned,
    ) -> io::Result<bool> {
        self.ensure_dir()?;
        let target = self.path(key, "token");
        let temp = self.path(key, &format!("{}.tmp", Lease::random_owner()));
        let replaced = Self::open_private(&temp, true)
            .and_then(|mut f| f.write_all(value))
            .and_then(|()| {
                let _lock = self.write_lock(key, abandoned)?;
                if let Some(current) = current {
                    if Self::read_entry(&target)?.as_deref() != current {
                        return Ok(false);
                    }
                }
                fs::rename(&temp, &target).map(|()| true)
            });
        if !matches!(replaced, Ok(true)) {
            let _ = fs::remove_file(&temp);
        }
        replaced
    }
}

/// How long a writer sleeps between tries of a held write lock (held for
/// a rename only, so this is rarely waited for twice).
const LOCK_POLL: Duration = Duration::from_millis(2);

/// Set when the future of a blocking job is dropped (its caller's store
/// timeout), so the job changes nothing after it.
#[derive(Debug, Clone, Default)]
struct Abandoned(Arc<AtomicBool>);

impl Abandoned {
    fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn error(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "given up on (store timeout) while waiting for the entry's write lock",
        )
    }

    /// Sets the flag when the returned guard is dropped.
    fn on_drop(self) -> impl Drop + Send {
        struct SetOnDrop(Abandoned);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                self.0 .0.store(true, Ordering::Release);
            }
        }
        SetOnDrop(self)
    }
}

/// `O_NOFOLLOW`: a symbolic link at the path is an error, not followed.
#[cfg(unix)]
fn no_follow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// The per-user cache directory, from the variables `var` reads.
fn user_cache_dir(var: impl Fn(&str) -> Option<PathBuf>) -> Option<PathBuf> {
    let absolute = |p: PathBuf| p.is_absolute().then_some(p);
    if cfg!(windows) {
        return var("LOCALAPPDATA").and_then(absolute);
    }
    let home = || var("HOME").and_then(absolute);
    if cfg!(target_os = "macos") {
        return home().map(|h| h.join("Library").join("Caches"));
    }
    var("XDG_CACHE_HOME")
        .and_then(absolute)
        .or_else(|| home().map(|h| h.join(".cache")))
}

impl TokenStore for FileStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, io::Result<Option<Vec<u8>>>> {
        let path = self.path(key, "token");
        self.blocking(move |store, _| {
            if !store.dir.exists() {
                return Ok(None);
            }
            store.check_dir()?;
            Self::read_entry(&path)
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        _ttl: Duration,
    ) -> BoxFuture<'a, io::Result<()>> {
        let (key, value) = (key.to_owned(), value.to_vec());
        self.blocking(move |store, abandoned| {
            store.write_entry(&key, None, &value, abandoned).map(drop)
        })
    }

    /// The compare and the rename under the entry's write lock.
    fn replace_if<'a>(
        &'a self,
        key: &'a str,
        current: Option<&'a [u8]>,
        value: &'a [u8],
        _ttl: Duration,
    ) -> BoxFuture<'a, io::Result<bool>> {
        let (key, value) = (key.to_owned(), value.to_vec());
        let current = current.map(<[u8]>::to_vec);
        self.blocking(move |store, abandoned| {
            store.write_entry(&key, Some(current.as_deref()), &value, abandoned)
        })
    }

    fn delete_if<'a>(
        &'a self,
        key: &'a str,
        expected: &'a [u8],
    ) -> BoxFuture<'a, io::Result<bool>> {
        let (key, expected) = (key.to_owned(), expected.to_vec());
        self.blocking(move |store, abandoned| {
            let _lock = store.write_lock(&key, abandoned)?;
            let path = store.path(&key, "token");
            match Self::read_entry(&path)? {
                Some(current) if current == expected => fs::remove_file(&path).map(|()| true),
                _ => Ok(false),
            }
        })
    }

    /// An exclusive OS lock on `KEY.lease`, which the OS releases when its
    /// holder exits or dies; on Unix it also ends after `ttl`, for a holder
    /// that is stopped or hung (see `file_lease`).
    fn try_lease<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, io::Result<Option<Lease>>> {
        let key = key.to_owned();
        self.blocking(move |store, _| {
            store.ensure_dir()?;
            let taken = file_lease::take(&store.path(&key, "lease"), ttl, Self::open_private)?;
            Ok(taken.map(|file| Lease::new(key, Lease::random_owner()).holding(file)))
        })
    }

    fn release(&self, lease: Lease) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            if let Some(file) = lease.resource().and_then(|r| r.downcast_ref::<File>()) {
                if let Err(e) = file_lease::clear(file) {
                    tracing::debug!(error = %e, "erasing the lease time of a lease file");
                }
                // Closing the handle (dropping the lease, below) releases
                // the lock too, so an unlock error changes nothing: Wine
                // reports std's second UnlockFile of an unlocked range as a
                // lock violation instead of "not locked".
                if let Err(e) = file.unlock() {
                    tracing::debug!(error = %e, "unlocking a lease file; closing it releases the lock");
                }
            }
            drop(lease);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::seal::MAX_VALUE;

    // Only the XDG test uses it: elsewhere (Windows) it would be dead code,
    // which scripts/windows.sh's -Dwarnings refuses.
    #[cfg(all(unix, not(target_os = "macos")))]
    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<PathBuf> {
        let pairs: Vec<(String, PathBuf)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), PathBuf::from(v)))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[cfg(all(unix, not(target_os = "macos")))]
    #[test]
    fn user_cache_follows_xdg_then_home() {
        let dir = user_cache_dir(vars(&[("XDG_CACHE_HOME", "/x/cache"), ("HOME", "/home/u")]));
        assert_eq!(dir, Some(PathBuf::from("/x/cache")));
        let dir = user_cache_dir(vars(&[("XDG_CACHE_HOME", "relative"), ("HOME", "/home/u")]));
        assert_eq!(dir, Some(PathBuf::from("/home/u/.cache")));
        assert_eq!(user_cache_dir(vars(&[])), None);
    }

    fn fresh_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("aim-token-{tag}-{}", Lease::random_owner()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A corrupted (or planted) entry file of any size costs at most the
    /// largest value the crate opens, not its whole length in memory.
    #[tokio::test]
    async fn a_huge_entry_file_is_not_read_whole() {
        let dir = fresh_dir("fs-huge");
        let store = FileStore::new(&dir);
        fs::write(store.path("k", "token"), vec![b'x'; 4 * MAX_VALUE]).unwrap();
        let read = store.get("k").await.unwrap().unwrap();
        assert_eq!(read.len(), MAX_VALUE + 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// In a directory others could write to, a planted link must not make
    /// the store read, lock or create files elsewhere.
    #[cfg(unix)]
    #[tokio::test]
    async fn links_planted_at_entry_lease_or_lock_paths_are_not_followed() {
        let dir = fresh_dir("fs-links");
        let outside = fresh_dir("fs-outside");
        let store = FileStore::new(&dir);
        let elsewhere = outside.join("victim");
        fs::write(&elsewhere, b"someone else's file").unwrap();
        std::os::unix::fs::symlink(&elsewhere, store.path("k", "token")).unwrap();
        assert!(
            store.get("k").await.is_err(),
            "followed a link at the entry"
        );
        let dangling = outside.join("created-by-the-store");
        std::os::unix::fs::symlink(&dangling, store.path("k", "lease")).unwrap();
        assert!(store.try_lease("k", Duration::from_secs(1)).await.is_err());
        assert!(!dangling.exists(), "created a file through a link");
        std::os::unix::fs::symlink(&dangling, store.path("k", "wlock")).unwrap();
        assert!(store.delete_if("k", b"x").await.is_err());
        assert!(!dangling.exists(), "created a file through a link");
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_dir_all(&outside).unwrap();
    }

    /// A directory other users can write to lets them replace or plant
    /// entries: a store error (the client asks AIM), never used.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_directory_others_can_write_to_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = fresh_dir("fs-open-dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let store = FileStore::new(&dir);
        let err = store
            .put("k", b"v", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("chmod 700"), "{err}");
        assert!(store.try_lease("k", Duration::from_secs(1)).await.is_err());
        assert!(store.get("k").await.is_err());
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        store.put("k", b"v", Duration::from_secs(1)).await.unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A lease released long ago must not look like a stalled one: a
    /// process that locks the file without writing a lease time (an
    /// older version of this crate sharing the directory) would be taken
    /// over at once, and both would ask AIM.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_released_lease_leaves_no_lease_time_to_take_over() {
        let dir = fresh_dir("fs-released");
        let store = FileStore::new(&dir);
        let lease = store
            .try_lease("k", Duration::from_millis(1))
            .await
            .unwrap();
        store.release(lease.unwrap()).await.unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let unmarked = File::open(store.path("k", "lease")).unwrap();
        unmarked.try_lock().unwrap();
        let taken = store.try_lease("k", Duration::from_secs(10)).await.unwrap();
        assert!(
            taken.is_none(),
            "took over a lease held without a lease time"
        );
        drop(unmarked);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn put_get_delete_if_and_leases() {
        let dir = std::env::temp_dir().join(format!("aim-token-fs-{}", Lease::random_owner()));
        let store = FileStore::new(&dir);
        assert_eq!(store.get("k").await.unwrap(), None);
        store
            .put("k", b"one", Duration::from_secs(1))
            .await
            .unwrap();
        store
            .put("k", b"two", Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"two"[..]));
        assert!(!store.delete_if("k", b"one").await.unwrap());
        assert!(store.delete_if("k", b"two").await.unwrap());
        assert_eq!(store.get("k").await.unwrap(), None);

        let lease = store
            .try_lease("k", Duration::from_secs(1))
            .await
            .unwrap()
            .unwrap();
        assert!(store
            .try_lease("k", Duration::from_secs(1))
            .await
            .unwrap()
            .is_none());
        store.release(lease).await.unwrap();
        let again = store.try_lease("k", Duration::from_secs(1)).await.unwrap();
        assert!(again.is_some());
        drop(again);
        assert!(store
            .try_lease("k", Duration::from_secs(1))
            .await
            .unwrap()
            .is_some());

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            store.put("k", b"x", Duration::from_secs(1)).await.unwrap();
            for entry in fs::read_dir(&dir).unwrap() {
                let mode = entry.unwrap().metadata().unwrap().permissions().mode();
                assert_eq!(mode & 0o077, 0, "group/other bits: {mode:o}");
            }
            let mode = fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "directory: {mode:o}");
        }
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }
}
