//! `FileStore`: the shared store in a directory, for the processes of one
//! host (scheduled jobs, scripts, services).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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

    /// Runs blocking file I/O off the async threads.
    fn blocking<T: Send + 'static>(
        &self,
        job: impl FnOnce(&FileStore) -> io::Result<T> + Send + 'static,
    ) -> BoxFuture<'static, io::Result<T>> {
        let store = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || job(&store))
                .await
                .map_err(io::Error::other)?
        })
    }

    fn ensure_dir(&self) -> io::Result<()> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&*self.dir)
    }

    /// Opens `path` for writing, user-only, creating it if needed.
    fn open_private(path: &Path, create_new: bool) -> io::Result<File> {
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if create_new {
            options.create_new(true);
        } else {
            options.create(true).truncate(false);
        }
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(path)
    }

    /// Holds the write lock of `key` (short: around a rename or a
    /// compare-and-delete, so a delete never removes a newer value).
    fn write_lock(&self, key: &str) -> io::Result<File> {
        self.ensure_dir()?;
        let file = Self::open_private(&self.path(key, "wlock"), false)?;
        file.lock()?;
        Ok(file)
    }
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
        self.blocking(move |_| match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        _ttl: Duration,
    ) -> BoxFuture<'a, io::Result<()>> {
        let (key, value) = (key.to_owned(), value.to_vec());
        self.blocking(move |store| {
            store.ensure_dir()?;
            let target = store.path(&key, "token");
            let temp = store.path(&key, &format!("{}.tmp", Lease::random_owner()));
            let written = Self::open_private(&temp, true).and_then(|mut f| f.write_all(&value));
            let _lock = store.write_lock(&key)?;
            match written.and_then(|()| fs::rename(&temp, &target)) {
                Ok(()) => Ok(()),
                Err(e) => {
                    let _ = fs::remove_file(&temp);
                    Err(e)
                }
            }
        })
    }

    fn delete_if<'a>(
        &'a self,
        key: &'a str,
        expected: &'a [u8],
    ) -> BoxFuture<'a, io::Result<bool>> {
        let (key, expected) = (key.to_owned(), expected.to_vec());
        self.blocking(move |store| {
            let _lock = store.write_lock(&key)?;
            let path = store.path(&key, "token");
            match fs::read(&path) {
                Ok(current) if current == expected => fs::remove_file(&path).map(|()| true),
                Ok(_) => Ok(false),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            }
        })
    }

    /// An exclusive OS lock on `KEY.lease`; `ttl` is not needed: the OS
    /// releases the lock when its holder exits or dies.
    fn try_lease<'a>(
        &'a self,
        key: &'a str,
        _ttl: Duration,
    ) -> BoxFuture<'a, io::Result<Option<Lease>>> {
        let key = key.to_owned();
        self.blocking(move |store| {
            store.ensure_dir()?;
            let file = Self::open_private(&store.path(&key, "lease"), false)?;
            match file.try_lock() {
                Ok(()) => Ok(Some(Lease::new(key, Lease::random_owner()).holding(file))),
                Err(TryLockError::WouldBlock) => Ok(None),
                Err(TryLockError::Error(e)) => Err(e),
            }
        })
    }

    fn release(&self, lease: Lease) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            if let Some(file) = lease.resource().and_then(|r| r.downcast_ref::<File>()) {
                file.unlock()?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
