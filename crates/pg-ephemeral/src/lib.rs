//! Throwaway PostgreSQL clusters for the `portcullis demo` command and for the test suites.
//!
//! A [`Cluster`] is a real PostgreSQL server: `initdb` into a fresh directory, then `postgres`
//! listening on `127.0.0.1` on a free port, with its Unix socket in a private directory. Dropping
//! the cluster performs a fast shutdown and deletes the directory (unless
//! [`ClusterOptions::keep`] is set).
//!
//! PostgreSQL refuses to run as root. When the current process is root, `initdb` and `postgres`
//! run as the `postgres` Unix user instead, and the cluster directory is handed over to that user.
//!
//! The postmaster gets `PR_SET_PDEATHSIG = SIGKILL`, so a test process that is killed does not
//! leave an orphan server behind. Because Linux delivers that signal when the *thread* that
//! forked the server exits, servers are forked from one long-lived helper thread; a cluster may
//! therefore be started from any thread (a test thread, a `spawn_blocking` thread, a `OnceLock`
//! initialiser) and outlive it.
//!
//! ```no_run
//! use pg_ephemeral::{Cluster, ClusterOptions, PgBinaries};
//!
//! let bins = PgBinaries::find()?;
//! let cluster = Cluster::start(&bins, ClusterOptions::default())?;
//! assert_eq!(cluster.psql("postgres", "select 1")?, "1");
//! println!("connect with {}", cluster.url("postgres"));
//! # Ok::<(), pg_ephemeral::Error>(())
//! ```

use std::env;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The address every cluster listens on.
const HOST: &str = "127.0.0.1";
/// The database superuser created by `initdb -U`.
const SUPERUSER: &str = "postgres";
/// The Unix user that runs PostgreSQL when the current process is root.
const OS_USER: &str = "postgres";
/// How to get the PostgreSQL server binaries.
const INSTALL_HINT: &str = "install PostgreSQL: apt-get install -y postgresql (or set PG_BIN to the folder holding initdb and postgres)";
/// How long `start` waits for the server to accept connections, and `stop` for it to exit.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// `start` retries this many times with a new port when the picked one was taken meanwhile.
const PORT_RETRIES: usize = 3;
/// Lines of the server log quoted in start errors.
const LOG_TAIL_LINES: usize = 30;
/// Longest socket directory path for which `<dir>/.s.PGSQL.<port>` still fits in `sun_path`
/// (108 bytes including the terminating NUL); longer ones get a short directory in the system
/// temp dir instead.
const MAX_SOCKET_DIR_LEN: usize = 90;
/// SQL longer than this is fed to psql on stdin instead of `-c` (Linux limits one argument to
/// 128 KiB).
const MAX_SQL_ARG_LEN: usize = 64 * 1024;

/// Everything that can go wrong. Each message says what failed, where (paths, port) and, when
/// there is one, what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No folder with `initdb` and `postgres` was found.
    #[error("PostgreSQL server binaries (initdb and postgres) not found; searched {searched}. To fix: {INSTALL_HINT}")]
    BinariesNotFound {
        /// Human-readable list of the places that were searched.
        searched: String,
    },
    /// `$PG_BIN` is set but does not hold the server binaries.
    #[error("PG_BIN is set to {dir}, which does not hold both `initdb` and `postgres`; set PG_BIN to the folder that does (e.g. /usr/lib/postgresql/15/bin) or unset it, or {INSTALL_HINT}")]
    BadPgBin {
        /// The value of `$PG_BIN`.
        dir: PathBuf,
    },
    /// Running as root and there is no `postgres` Unix user to run the server as.
    #[error("running as root, and PostgreSQL refuses to run as root, but there is no `postgres` Unix user to run it as; create one with `useradd --system postgres` (installing the postgresql package does that too) or run as a non-root user")]
    NoPostgresUser,
    /// Running as root and the `postgres` Unix user cannot reach the cluster directory.
    #[error("the `{user}` Unix user that runs PostgreSQL cannot enter {path} (no search permission for it), so it cannot reach the cluster directory; put the cluster under a directory it can traverse (ClusterOptions::parent_dir, e.g. /tmp) or run `chmod o+x {path}`")]
    NotAccessible {
        /// The directory lacking search permission.
        path: PathBuf,
        /// The Unix user that needs it.
        user: String,
    },
    /// A file-system operation failed.
    #[error("could not {action} {path}: {source}")]
    Io {
        /// What was being done, e.g. "create directory".
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A program could not be started at all.
    #[error("could not run {program}: {source}; check that it exists and is executable, or {INSTALL_HINT}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An option has a value that cannot work.
    #[error("invalid ClusterOptions: {reason}")]
    InvalidOptions {
        /// What is wrong and what to do instead.
        reason: String,
    },
    /// `start_in` was given a directory that holds something other than a cluster.
    #[error("{data_dir} is not empty and is not a PostgreSQL data directory (it has no PG_VERSION file); pass a missing or empty directory, or one that holds a cluster")]
    NotADataDir {
        /// The directory.
        data_dir: PathBuf,
    },
    /// `initdb` failed.
    #[error("initdb failed for {data_dir} ({status}); its output:\n{output}")]
    Initdb {
        /// The data directory being created.
        data_dir: PathBuf,
        /// How initdb ended.
        status: String,
        /// Its stdout and stderr.
        output: String,
    },
    /// The server did not come up.
    #[error("PostgreSQL did not start on {HOST}:{port} (data directory {data_dir}): {reason}; last lines of {log_file}:\n{log_tail}")]
    Start {
        /// The port it was asked to listen on.
        port: u16,
        /// Its data directory.
        data_dir: PathBuf,
        /// Its log file.
        log_file: PathBuf,
        /// Why we gave up.
        reason: String,
        /// The last lines of the log file.
        log_tail: String,
    },
    /// No free TCP port could be found.
    #[error("could not find a free TCP port on {HOST}: {source}")]
    FreePort {
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A `psql` invocation failed.
    #[error("psql as {target} failed ({status}) running {sql}; psql said:\n{stderr}")]
    Psql {
        /// `postgres@HOST:PORT/DB`, HOST being `127.0.0.1` or the socket directory.
        target: String,
        /// The SQL (shortened when long).
        sql: String,
        /// How psql ended.
        status: String,
        /// What psql printed on stderr.
        stderr: String,
    },
    /// The postmaster could not be signalled or waited for.
    #[error("could not stop the postmaster (pid {pid}, data directory {data_dir}): {source}")]
    Stop {
        /// The postmaster pid.
        pid: u32,
        /// Its data directory.
        data_dir: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------------------------

/// A folder holding the PostgreSQL server binaries (`initdb`, `postgres`, usually `pg_ctl`,
/// `psql`, `pgbench` too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    /// The folder.
    pub bin_dir: PathBuf,
}

impl PgBinaries {
    /// Finds the server binaries. Order: `$PG_BIN` (a folder), a folder on `$PATH` holding both
    /// `initdb` and `postgres`, the highest-versioned `/usr/lib/postgresql/*/bin`,
    /// `/usr/local/pgsql/bin`.
    ///
    /// A set but wrong `$PG_BIN` is an error rather than silently ignored.
    pub fn find() -> Result<Self, Error> {
        if let Some(dir) = env::var_os("PG_BIN").filter(|v| !v.is_empty()) {
            let dir = PathBuf::from(dir);
            return if has_server_tools(&dir) {
                Ok(PgBinaries { bin_dir: dir })
            } else {
                Err(Error::BadPgBin { dir })
            };
        }
        if let Some(path) = env::var_os("PATH") {
            if let Some(dir) = env::split_paths(&path).find(|d| has_server_tools(d)) {
                return Ok(PgBinaries { bin_dir: dir });
            }
        }
        let debian_root = Path::new("/usr/lib/postgresql");
        for dir in versioned_bin_dirs(debian_root) {
            if has_server_tools(&dir) {
                return Ok(PgBinaries { bin_dir: dir });
            }
        }
        let source_build = PathBuf::from("/usr/local/pgsql/bin");
        if has_server_tools(&source_build) {
            return Ok(PgBinaries {
                bin_dir: source_build,
            });
        }
        Err(Error::BinariesNotFound {
            searched: "$PG_BIN (unset), every folder on $PATH, /usr/lib/postgresql/*/bin and /usr/local/pgsql/bin".to_string(),
        })
    }

    /// The path of `tool` (e.g. `"psql"`, `"pgbench"`, `"pg_isready"`): in [`bin_dir`](Self::bin_dir)
    /// if it is there, else the first match on `$PATH` (Debian puts `psql` in `/usr/bin`), else
    /// `bin_dir/tool` so that the error from running it names the expected place.
    pub fn path(&self, tool: &str) -> PathBuf {
        let in_bin_dir = self.bin_dir.join(tool);
        if is_executable(&in_bin_dir) {
            return in_bin_dir;
        }
        if let Some(path) = env::var_os("PATH") {
            if let Some(found) = env::split_paths(&path)
                .map(|d| d.join(tool))
                .find(|p| is_executable(p))
            {
                return found;
            }
        }
        in_bin_dir
    }
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.is_file() && m.mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn has_server_tools(dir: &Path) -> bool {
    is_executable(&dir.join("initdb")) && is_executable(&dir.join("postgres"))
}

/// `root/*/bin` for every numerically named entry of `root` (`15`, `9.6`), highest version first.
fn versioned_bin_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let version = name
                .to_str()?
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, e.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

/// How to set up a cluster. `ClusterOptions::default()` is what tests want: free port, no fsync,
/// trust authentication, system temp dir, deleted on drop.
#[derive(Default, Clone)]
pub struct ClusterOptions {
    /// TCP port; `None` picks a free one.
    pub port: Option<u16>,
    /// `fsync=on`. Off by default (fast, and the data is throwaway); benchmarks and the demo may
    /// turn it on.
    pub fsync: bool,
    /// `Some`: the superuser gets this password (`initdb --pwfile`) and TCP connections must
    /// authenticate with scram-sha-256. `None`: trust everywhere. Unix-socket connections are
    /// always trusted (the socket directory is private to the cluster's owner).
    pub superuser_password: Option<String>,
    /// Extra server settings, passed as `-c name=value` (e.g. `max_connections`,
    /// `log_statement`). They win over the defaults this crate sets.
    pub settings: Vec<(String, String)>,
    /// Where `start` creates its temporary directory; `None` = the system temp dir.
    pub parent_dir: Option<PathBuf>,
    /// Don't delete the directory on drop.
    pub keep: bool,
}

impl fmt::Debug for ClusterOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterOptions")
            .field("port", &self.port)
            .field("fsync", &self.fsync)
            .field(
                "superuser_password",
                &self.superuser_password.as_ref().map(|_| "<redacted>"),
            )
            .field("settings", &self.settings)
            .field("parent_dir", &self.parent_dir)
            .field("keep", &self.keep)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Running as another user, and orphan protection
// ---------------------------------------------------------------------------------------------

/// The Unix identity the server processes switch to (only when we are root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RunAs {
    uid: libc::uid_t,
    gid: libc::gid_t,
}

/// `None` when not root (run as the current user), the `postgres` user's ids when root.
fn run_as() -> Result<Option<RunAs>, Error> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    lookup_user(OS_USER)?.map(Some).ok_or(Error::NoPostgresUser)
}

/// Looks a user up with the reentrant `getpwnam_r` (tests start clusters from many threads).
fn lookup_user(name: &str) -> Result<Option<RunAs>, Error> {
    let c_name = std::ffi::CString::new(name).map_err(|_| Error::NoPostgresUser)?;
    let mut buf_len = 16 * 1024;
    loop {
        let mut buf = vec![0 as libc::c_char; buf_len];
        // SAFETY: an all-zero passwd (null pointers, zero ids) is a valid value to be overwritten.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer refers to live, correctly sized memory owned by this frame.
        let rc = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf_len < 1024 * 1024 {
            buf_len *= 4;
            continue;
        }
        if rc != 0 || result.is_null() {
            return Ok(None);
        }
        return Ok(Some(RunAs {
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        }));
    }
}

/// Makes `cmd` switch to `run_as` (if any) and die with its parent.
fn prepare_child(cmd: &mut Command, run_as: Option<RunAs>) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe system
    // calls; it does not allocate or take locks.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(user) = run_as {
                let groups = [user.gid];
                if libc::setgroups(1, groups.as_ptr()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::setgid(user.gid) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::setuid(user.uid) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // After setuid: the kernel clears the parent-death signal on credential changes.
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect; then nobody would kill us.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` from a helper thread that lives as long as the process, so that the child's
/// parent-death signal fires when the process dies, not when the calling thread ends.
fn spawn_long_lived(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Option<Mutex<mpsc::Sender<SpawnRequest>>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("pg-ephemeral-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .ok()
            .map(|_| Mutex::new(tx))
    });
    let Some(spawner) = spawner else {
        // No helper thread could be started: spawning here still works, the server just dies
        // with this thread.
        return cmd.spawn();
    };
    let (reply_tx, reply_rx) = mpsc::channel();
    let sent = match spawner.lock() {
        Ok(tx) => tx.send((cmd, reply_tx)),
        Err(poisoned) => poisoned.into_inner().send((cmd, reply_tx)),
    };
    match sent {
        Ok(()) => reply_rx
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("the pg-ephemeral spawner thread is gone"))),
        Err(mpsc::SendError((mut cmd, _))) => cmd.spawn(),
    }
}

/// Chowns `path` and everything below it (not following symlinks).
fn chown_tree(path: &Path, user: RunAs) -> Result<(), Error> {
    std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid))
        .map_err(io_err("change the owner of", path))?;
    let meta = fs::symlink_metadata(path).map_err(io_err("inspect", path))?;
    if meta.is_dir() {
        for entry in fs::read_dir(path).map_err(io_err("list directory", path))? {
            let entry = entry.map_err(io_err("list directory", path))?;
            chown_tree(&entry.path(), user)?;
        }
    }
    Ok(())
}

/// Checks that `user` may search `dir` and all its ancestors, so that it can reach whatever we
/// create inside `dir`.
fn check_traversable(dir: &Path, user: RunAs) -> Result<(), Error> {
    for ancestor in dir.ancestors() {
        let meta = fs::metadata(ancestor).map_err(io_err("inspect", ancestor))?;
        let mode = meta.mode();
        let allowed = if meta.uid() == user.uid {
            mode & 0o100 != 0
        } else if meta.gid() == user.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !allowed {
            return Err(Error::NotAccessible {
                path: ancestor.to_path_buf(),
                user: OS_USER.to_string(),
            });
        }
    }
    Ok(())
}

fn create_private_dir(path: &Path) -> Result<(), Error> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(io_err("create directory", path))
}

fn make_temp_dir(parent: &Path, prefix: &str) -> Result<PathBuf, Error> {
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(fs::Permissions::from_mode(0o700))
        .tempdir_in(parent)
        .map(|d| d.keep())
        .map_err(io_err("create a temporary directory in", parent))
}

// ---------------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------------

/// Asks the kernel for a free port. Ports already handed out by this process are skipped, so
/// concurrent clusters in one test binary do not race for the same one.
fn free_port() -> Result<u16, Error> {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut handed_out = match HANDED_OUT.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    let mut last = 0;
    for _ in 0..64 {
        let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
            .map_err(|source| Error::FreePort { source })?;
        let port = listener
            .local_addr()
            .map_err(|source| Error::FreePort { source })?
            .port();
        last = port;
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return Ok(port);
        }
    }
    Ok(last)
}

// ---------------------------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------------------------

/// A running PostgreSQL server in a throwaway (or, with [`Cluster::start_in`], a given) data
/// directory. Dropping it stops the server and removes the directory unless
/// [`ClusterOptions::keep`].
#[derive(Debug)]
pub struct Cluster {
    bins: PgBinaries,
    opts: ClusterOptions,
    run_as: Option<RunAs>,
    port: u16,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_file: PathBuf,
    /// Removed on drop unless `opts.keep`.
    owned_dir: Option<PathBuf>,
    /// Removed on drop regardless of `opts.keep` (sockets only make sense while running).
    scratch_dirs: Vec<PathBuf>,
    child: Option<Child>,
}

/// Why one attempt to launch the postmaster failed.
struct LaunchFailure {
    port_in_use: bool,
    error: Box<Error>,
}

impl Cluster {
    /// `initdb`s a new cluster in a fresh temporary directory (under
    /// [`ClusterOptions::parent_dir`] or the system temp dir) and starts it.
    ///
    /// Layout: `<tmp>/data` (data directory), `<tmp>/sock` (Unix socket), `<tmp>/postgres.log`.
    pub fn start(bins: &PgBinaries, opts: ClusterOptions) -> Result<Cluster, Error> {
        validate(&opts)?;
        let run_as = run_as()?;
        let parent = match &opts.parent_dir {
            Some(dir) => {
                fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
                std::path::absolute(dir).map_err(io_err("resolve", dir))?
            }
            None => env::temp_dir(),
        };
        if let Some(user) = run_as {
            check_traversable(&parent, user)?;
        }
        let root = make_temp_dir(&parent, "pg-ephemeral-")?;
        let mut cluster = Cluster {
            bins: bins.clone(),
            run_as,
            port: opts.port.unwrap_or(0),
            data_dir: root.join("data"),
            socket_dir: root.join("sock"),
            log_file: root.join("postgres.log"),
            owned_dir: Some(root.clone()),
            scratch_dirs: Vec::new(),
            child: None,
            opts,
        };
        // From here on, an early return drops `cluster`, which removes `root` (unless keep).
        if root.as_os_str().len() <= MAX_SOCKET_DIR_LEN - "/sock".len() {
            create_private_dir(&cluster.socket_dir)?;
        } else {
            cluster.socket_dir = cluster.short_socket_dir()?;
        }
        if let Some(user) = run_as {
            chown_tree(&root, user)?;
        }
        cluster.initdb()?;
        cluster.launch()?;
        Ok(cluster)
    }

    /// Starts the cluster whose data directory is `data_dir`, `initdb`ing it first when it is
    /// missing or empty. An existing cluster is reused as it is (demo restarts); its
    /// `pg_hba.conf` is rewritten and, with a password, the superuser password is reset, so that
    /// `opts` always describe how to connect.
    ///
    /// The log goes to `<data_dir>/postgres.log` (appended), the socket to a private directory in
    /// the system temp dir. On drop the server is stopped; `data_dir` is removed only if this
    /// call created it and `opts.keep` is false.
    pub fn start_in(
        bins: &PgBinaries,
        data_dir: &Path,
        opts: ClusterOptions,
    ) -> Result<Cluster, Error> {
        validate(&opts)?;
        let run_as = run_as()?;
        let data_dir = std::path::absolute(data_dir).map_err(io_err("resolve", data_dir))?;
        let initialized = data_dir.join("PG_VERSION").is_file();
        let mut created = false;
        if !initialized {
            if data_dir.exists() {
                let mut entries =
                    fs::read_dir(&data_dir).map_err(io_err("list directory", &data_dir))?;
                if entries.next().is_some() {
                    return Err(Error::NotADataDir { data_dir });
                }
            } else if let Some(parent) = data_dir.parent() {
                fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
            }
        }
        if let Some(user) = run_as {
            if let Some(parent) = data_dir.parent() {
                check_traversable(parent, user)?;
            }
        }
        if !data_dir.exists() {
            create_private_dir(&data_dir)?;
            created = true;
        }
        let mut cluster = Cluster {
            bins: bins.clone(),
            run_as,
            port: opts.port.unwrap_or(0),
            log_file: data_dir.join("postgres.log"),
            socket_dir: PathBuf::new(),
            owned_dir: created.then(|| data_dir.clone()),
            data_dir,
            scratch_dirs: Vec::new(),
            child: None,
            opts,
        };
        cluster.socket_dir = cluster.short_socket_dir()?;
        if let Some(user) = run_as {
            let meta =
                fs::metadata(&cluster.data_dir).map_err(io_err("inspect", &cluster.data_dir))?;
            if meta.uid() != user.uid || !initialized {
                chown_tree(&cluster.data_dir, user)?;
            }
        }
        if !initialized {
            cluster.initdb()?;
        }
        cluster.launch()?;
        if initialized {
            if let Some(password) = cluster.opts.superuser_password.clone() {
                let sql = format!(
                    "ALTER ROLE {} PASSWORD {}",
                    quote_ident(SUPERUSER),
                    quote_literal(&password)
                );
                let socket = cluster.socket_dir.clone();
                cluster.run_psql(socket.as_os_str(), "postgres", &sql)?;
            }
        }
        Ok(cluster)
    }

    /// The address the server listens on: `"127.0.0.1"`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the Unix socket `.s.PGSQL.<port>` (use it as `host` in libpq).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The superuser: `"postgres"`.
    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    /// The data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's log file (stdout and stderr of the postmaster).
    pub fn log_file(&self) -> PathBuf {
        self.log_file.clone()
    }

    /// The binaries the cluster runs.
    pub fn bins(&self) -> &PgBinaries {
        &self.bins
    }

    /// The postmaster's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `postgresql://postgres[:password]@127.0.0.1:PORT/db`, with the password and database
    /// name percent-encoded.
    pub fn url(&self, db: &str) -> String {
        let password = match &self.opts.superuser_password {
            Some(pw) => format!(":{}", percent_encode(pw)),
            None => String::new(),
        };
        format!(
            "postgresql://{}{}@{}:{}/{}",
            SUPERUSER,
            password,
            HOST,
            self.port,
            percent_encode(db)
        )
    }

    /// Runs `psql -X -A -t -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p PORT -U postgres -d db -c sql`
    /// (with `PGPASSWORD` when the cluster has a password) and returns its stdout without the
    /// trailing newline(s): `psql("postgres", "select 1")` is `"1"`, rows are separated by `\n`
    /// and columns by `|`. SQL longer than 64 KiB is fed on stdin instead of `-c` (then each
    /// statement runs in its own transaction unless the SQL says `BEGIN`).
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, Error> {
        self.run_psql(OsStr::new(HOST), db, sql)
    }

    /// `CREATE DATABASE "name"` (the name is quoted, so any string works).
    pub fn create_database(&self, name: &str) -> Result<(), Error> {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {}", quote_ident(name)),
        )
        .map(|_| ())
    }

    /// Fast shutdown: SIGINT to the postmaster, then wait up to 30 s, then SIGKILL. Calling it
    /// again (or after the server died) does nothing.
    pub fn stop(&mut self) -> Result<(), Error> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id();
        let stop_err = |source| Error::Stop {
            pid,
            data_dir: self.data_dir.clone(),
            source,
        };
        if child.try_wait().map_err(stop_err)?.is_some() {
            return Ok(());
        }
        // SAFETY: kill has no memory-safety preconditions; `pid` is our unreaped child, so it
        // cannot have been recycled for another process.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGINT);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if child.try_wait().map_err(stop_err)?.is_some() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(20));
        }
        // Still running after 30 s: SIGKILL. Its backends notice the postmaster is gone and
        // exit by themselves.
        child.kill().map_err(stop_err)?;
        child.wait().map_err(stop_err)?;
        Ok(())
    }

    // -- internals ----------------------------------------------------------------------------

    /// A private socket directory with a short path in the system temp dir.
    fn short_socket_dir(&mut self) -> Result<PathBuf, Error> {
        let tmp = env::temp_dir();
        let base = if tmp.as_os_str().len() + 20 <= MAX_SOCKET_DIR_LEN {
            tmp
        } else {
            PathBuf::from("/tmp")
        };
        if let Some(user) = self.run_as {
            check_traversable(&base, user)?;
        }
        let dir = make_temp_dir(&base, "pgsock-")?;
        self.scratch_dirs.push(dir.clone());
        if let Some(user) = self.run_as {
            chown_tree(&dir, user)?;
        }
        Ok(dir)
    }

    fn initdb(&self) -> Result<(), Error> {
        let program = self.bins.path("initdb");
        let mut cmd = Command::new(&program);
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args([
                "-U",
                SUPERUSER,
                "-E",
                "UTF8",
                "--no-locale",
                "--auth-local=trust",
            ])
            .arg(format!("--auth-host={}", self.host_auth_method()));
        if !self.opts.fsync {
            cmd.arg("--no-sync");
        }
        // The password file lives in its own private directory, deleted when this returns.
        let mut _password_dir = None;
        if let Some(password) = &self.opts.superuser_password {
            let dir = tempfile::Builder::new()
                .prefix("pg-ephemeral-pw-")
                .tempdir()
                .map_err(io_err("create a temporary directory in", &env::temp_dir()))?;
            let file = dir.path().join("pwfile");
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&file)
                .map_err(io_err("create", &file))?;
            writeln!(f, "{password}").map_err(io_err("write", &file))?;
            if let Some(user) = self.run_as {
                chown_tree(dir.path(), user)?;
            }
            let mut arg = OsString::from("--pwfile=");
            arg.push(&file);
            cmd.arg(arg);
            _password_dir = Some(dir);
        }
        if let Some(parent) = self.data_dir.parent() {
            cmd.current_dir(parent);
        }
        cmd.stdin(Stdio::null());
        prepare_child(&mut cmd, self.run_as);
        let out = cmd.output().map_err(|source| Error::Spawn {
            program: program.clone(),
            source,
        })?;
        if !out.status.success() {
            let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
            output.push_str(&String::from_utf8_lossy(&out.stderr));
            return Err(Error::Initdb {
                data_dir: self.data_dir.clone(),
                status: out.status.to_string(),
                output,
            });
        }
        Ok(())
    }

    fn host_auth_method(&self) -> &'static str {
        if self.opts.superuser_password.is_some() {
            "scram-sha-256"
        } else {
            "trust"
        }
    }

    /// Rewrites pg_hba.conf so that it matches `opts` (also for reused data directories).
    fn write_hba(&self) -> Result<(), Error> {
        let method = self.host_auth_method();
        let hba = format!(
            "# Written by pg-ephemeral on every start.\n\
             # TYPE  DATABASE     USER  ADDRESS        METHOD\n\
             local   all          all                  trust\n\
             host    all          all   127.0.0.1/32   {method}\n\
             host    all          all   ::1/128        {method}\n\
             local   replication  all                  trust\n\
             host    replication  all   127.0.0.1/32   {method}\n\
             host    replication  all   ::1/128        {method}\n"
        );
        let path = self.data_dir.join("pg_hba.conf");
        // Overwriting an existing file keeps its owner (the server user).
        fs::write(&path, hba).map_err(io_err("write", &path))?;
        if let Some(user) = self.run_as {
            chown_tree(&path, user)?;
        }
        Ok(())
    }

    fn launch(&mut self) -> Result<(), Error> {
        self.write_hba()?;
        let mut retries = 0;
        loop {
            let port = match self.opts.port {
                Some(port) => port,
                None => free_port()?,
            };
            match self.try_launch(port) {
                Ok(child) => {
                    self.port = port;
                    self.child = Some(child);
                    return Ok(());
                }
                Err(failure)
                    if failure.port_in_use
                        && self.opts.port.is_none()
                        && retries < PORT_RETRIES =>
                {
                    retries += 1;
                }
                Err(failure) => return Err(*failure.error),
            }
        }
    }

    fn server_args(&self, port: u16) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["-D".into(), self.data_dir.clone().into_os_string()];
        args.push("-p".into());
        args.push(port.to_string().into());
        args.push("-k".into());
        args.push(self.socket_dir.clone().into_os_string());
        let defaults = [
            ("listen_addresses", HOST),
            ("fsync", if self.opts.fsync { "on" } else { "off" }),
            ("logging_collector", "off"),
        ];
        let overridden = |name: &str| {
            self.opts
                .settings
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        for (name, value) in defaults {
            if !overridden(name) {
                args.push("-c".into());
                args.push(format!("{name}={value}").into());
            }
        }
        for (name, value) in &self.opts.settings {
            args.push("-c".into());
            args.push(format!("{name}={value}").into());
        }
        args
    }

    fn try_launch(&self, port: u16) -> Result<Child, LaunchFailure> {
        let fail = |reason: String, port_in_use: bool| LaunchFailure {
            port_in_use,
            error: Box::new(Error::Start {
                port,
                data_dir: self.data_dir.clone(),
                log_file: self.log_file.clone(),
                reason,
                log_tail: log_tail(&self.log_file, LOG_TAIL_LINES),
            }),
        };
        let plain = |error: Error| LaunchFailure {
            port_in_use: false,
            error: Box::new(error),
        };
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.log_file)
            .map_err(io_err("open the log file", &self.log_file))
            .map_err(plain)?;
        let log_start = log
            .metadata()
            .map_err(io_err("inspect", &self.log_file))
            .map_err(plain)?
            .len();
        if let Some(user) = self.run_as {
            chown_tree(&self.log_file, user).map_err(plain)?;
        }
        let log_err = log
            .try_clone()
            .map_err(io_err("open the log file", &self.log_file))
            .map_err(plain)?;

        let program = self.bins.path("postgres");
        let mut cmd = Command::new(&program);
        cmd.args(self.server_args(port))
            .current_dir(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        prepare_child(&mut cmd, self.run_as);
        let mut child = spawn_long_lived(cmd).map_err(|source| {
            plain(Error::Spawn {
                program: program.clone(),
                source,
            })
        })?;

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    let new_log = read_log_from(&self.log_file, log_start);
                    let in_use = new_log.contains("Address already in use")
                        || new_log.contains("could not create any TCP/IP sockets");
                    return Err(fail(format!("postgres exited ({status})"), in_use));
                }
                Ok(None) => {}
                Err(e) => {
                    kill_and_reap(&mut child);
                    return Err(fail(format!("could not wait for postgres: {e}"), false));
                }
            }
            if self.pid_file_says_ready(child.id(), port) && accepts_tcp(port) {
                return Ok(child);
            }
            if Instant::now() >= deadline {
                kill_and_reap(&mut child);
                return Err(fail(
                    format!("not ready after {} s (killed it)", READY_TIMEOUT.as_secs()),
                    false,
                ));
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// `postmaster.pid` names our process and port and its status line says "ready".
    fn pid_file_says_ready(&self, pid: u32, port: u16) -> bool {
        let Ok(text) = fs::read_to_string(self.data_dir.join("postmaster.pid")) else {
            return false;
        };
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        lines.first() == Some(&pid.to_string().as_str())
            && lines.get(3) == Some(&port.to_string().as_str())
            && lines.iter().rev().find(|l| !l.is_empty()) == Some(&"ready")
    }

    fn run_psql(&self, host: &OsStr, db: &str, sql: &str) -> Result<String, Error> {
        let program = self.bins.path("psql");
        let mut cmd = Command::new(&program);
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(host)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", db]);
        let via_stdin = sql.len() > MAX_SQL_ARG_LEN;
        if via_stdin {
            cmd.args(["-f", "-"]).stdin(Stdio::piped());
        } else {
            cmd.arg("-c").arg(sql).stdin(Stdio::null());
        }
        for var in [
            "PGSERVICE",
            "PGSERVICEFILE",
            "PGSSLMODE",
            "PGOPTIONS",
            "PGHOSTADDR",
            "PGTARGETSESSIONATTRS",
            "PGPASSFILE",
        ] {
            cmd.env_remove(var);
        }
        match &self.opts.superuser_password {
            Some(pw) => cmd.env("PGPASSWORD", pw),
            None => cmd.env_remove("PGPASSWORD"),
        };
        cmd.env("PGCONNECT_TIMEOUT", "10")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawn_err = |source| Error::Spawn {
            program: program.clone(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let writer = if via_stdin {
            child.stdin.take().map(|mut stdin| {
                let sql = sql.to_owned();
                // A separate thread, so that a psql blocked on a full stdout pipe cannot
                // deadlock with us blocked on its full stdin pipe.
                thread::spawn(move || stdin.write_all(sql.as_bytes()))
            })
        } else {
            None
        };
        let out = child.wait_with_output().map_err(spawn_err)?;
        let write_result = writer.map(|w| w.join());
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let target = || format!("{SUPERUSER}@{}:{}/{db}", host.to_string_lossy(), self.port);
        if !out.status.success() {
            return Err(Error::Psql {
                target: target(),
                sql: shorten(sql, 300),
                status: out.status.to_string(),
                stderr,
            });
        }
        if let Some(Ok(Err(e))) = write_result {
            return Err(Error::Psql {
                target: target(),
                sql: shorten(sql, 300),
                status: format!("could not write the SQL to its stdin: {e}"),
                stderr,
            });
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        Ok(stdout.trim_end_matches('\n').to_string())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("pg-ephemeral: {e}");
        }
        for dir in self.scratch_dirs.drain(..) {
            let _ = fs::remove_dir_all(&dir);
        }
        if !self.opts.keep {
            if let Some(dir) = self.owned_dir.take() {
                if let Err(e) = fs::remove_dir_all(&dir) {
                    if e.kind() != io::ErrorKind::NotFound {
                        eprintln!(
                            "pg-ephemeral: could not remove cluster directory {}: {e}",
                            dir.display()
                        );
                    }
                }
            }
        }
    }
}

fn validate(opts: &ClusterOptions) -> Result<(), Error> {
    if let Some(pw) = &opts.superuser_password {
        if pw.is_empty() || pw.contains(['\n', '\r', '\0']) {
            return Err(Error::InvalidOptions {
                reason: "superuser_password must be non-empty and must not contain newlines or NUL (initdb reads it from a one-line file)".to_string(),
            });
        }
    }
    for (name, value) in &opts.settings {
        if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
            return Err(Error::InvalidOptions {
                reason: format!("setting {name:?}={value:?} is not a valid `-c name=value` pair"),
            });
        }
    }
    Ok(())
}

fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn accepts_tcp(port: u16) -> bool {
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// The log from byte `offset` on (what this launch attempt wrote).
fn read_log_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = File::open(path) {
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = f.read_to_end(&mut bytes);
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last `lines` lines of the log (reading at most its last 64 KiB).
fn log_tail(path: &Path, lines: usize) -> String {
    let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let text = read_log_from(path, len.saturating_sub(64 * 1024));
    let all: Vec<&str> = text.lines().collect();
    let tail = &all[all.len().saturating_sub(lines)..];
    if tail.is_empty() {
        "(the log is empty)".to_string()
    } else {
        tail.join("\n")
    }
}

fn shorten(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(max_chars).collect();
        format!("{head:?}… ({} bytes in all)", s.len())
    }
}

/// `"name"` with embedded double quotes doubled.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` with embedded single quotes doubled (standard_conforming_strings is on).
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Percent-encodes everything except RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn error_stays_small() {
        // Clippy's result_large_err fires at 128 bytes, in every crate that returns our Error.
        assert!(
            std::mem::size_of::<Error>() < 128,
            "{}",
            std::mem::size_of::<Error>()
        );
    }

    #[test]
    fn percent_encoding_keeps_unreserved_only() {
        assert_eq!(percent_encode("a-b.c_d~e"), "a-b.c_d~e");
        assert_eq!(percent_encode("p@ss:w/rd é"), "p%40ss%3Aw%2Frd%20%C3%A9");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("my \"db\""), "\"my \"\"db\"\"\"");
        assert_eq!(quote_literal("O'Brien"), "'O''Brien'");
    }

    #[test]
    fn versioned_dirs_sort_numerically() {
        let tmp = tempfile::tempdir().unwrap();
        for v in ["9.6", "15", "10", "notaversion"] {
            fs::create_dir(tmp.path().join(v)).unwrap();
        }
        let dirs = versioned_bin_dirs(tmp.path());
        let names: Vec<String> = dirs
            .iter()
            .map(|d| {
                d.parent()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(names, ["15", "10", "9.6"]);
    }

    #[test]
    fn options_debug_redacts_password() {
        let opts = ClusterOptions {
            superuser_password: Some("hunter2".into()),
            ..Default::default()
        };
        let shown = format!("{opts:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn invalid_password_is_rejected_before_anything_runs() {
        let opts = ClusterOptions {
            superuser_password: Some("two\nlines".into()),
            ..Default::default()
        };
        assert!(matches!(validate(&opts), Err(Error::InvalidOptions { .. })));
    }

    #[test]
    fn free_ports_are_not_handed_out_twice() {
        let a = free_port().unwrap();
        let b = free_port().unwrap();
        assert_ne!(a, b);
    }
}
