//! Starts real PostgreSQL clusters (initdb + postgres on a free port in a temp dir).
//! A missing PostgreSQL installation fails these tests with the install step; nothing skips.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use pg_ephemeral::{Cluster, ClusterOptions, Error, PgBinaries};

fn bins() -> PgBinaries {
    PgBinaries::find().unwrap_or_else(|e| panic!("{e}"))
}

fn process_exists(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// A temp dir the `postgres` Unix user can traverse when the tests run as root.
fn traversable_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    dir
}

#[test]
fn finds_binaries_and_client_tools() {
    let bins = bins();
    assert!(bins.bin_dir.join("initdb").is_file());
    assert!(bins.bin_dir.join("postgres").is_file());
    for tool in ["psql", "pgbench", "pg_isready"] {
        let path = bins.path(tool);
        assert!(path.is_file(), "{tool} resolved to {}", path.display());
    }
}

#[test]
fn start_query_create_database_and_drop_cleans_up() {
    let bins = bins();
    let cluster = Cluster::start(&bins, ClusterOptions::default()).unwrap();
    assert_eq!(cluster.host(), "127.0.0.1");
    assert_eq!(cluster.superuser(), "postgres");
    assert_ne!(cluster.port(), 5432);
    assert!(cluster.data_dir().join("PG_VERSION").is_file());
    assert!(cluster.log_file().is_file());
    assert!(cluster
        .socket_dir()
        .join(format!(".s.PGSQL.{}", cluster.port()))
        .exists());
    assert_eq!(
        cluster.url("app"),
        format!("postgresql://postgres@127.0.0.1:{}/app", cluster.port())
    );

    assert_eq!(cluster.psql("postgres", "select 1").unwrap(), "1");
    assert_eq!(
        cluster
            .psql("postgres", "select 1, 'a'; select 2, 'b'")
            .unwrap(),
        "1|a\n2|b"
    );
    assert_eq!(cluster.psql("postgres", "show fsync").unwrap(), "off");
    assert_eq!(
        cluster.psql("postgres", "show max_connections").unwrap(),
        "100"
    );

    cluster.create_database("app").unwrap();
    cluster
        .create_database("with \"quotes\" and spaces")
        .unwrap();
    assert_eq!(
        cluster
            .psql(
                "app",
                "create table t(x int); insert into t values (41), (1); select sum(x) from t"
            )
            .unwrap(),
        "42"
    );
    let dbs = cluster
        .psql(
            "postgres",
            "select datname from pg_database order by datname",
        )
        .unwrap();
    assert!(
        dbs.lines().any(|l| l == "with \"quotes\" and spaces"),
        "{dbs}"
    );

    let err = cluster
        .psql("app", "select * from missing_table")
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("missing_table"), "{msg}");
    assert!(msg.contains(&cluster.port().to_string()), "{msg}");

    let pid = cluster.pid().expect("running");
    let root = cluster.data_dir().parent().unwrap().to_path_buf();
    let socket_dir = cluster.socket_dir().to_path_buf();
    assert!(process_exists(pid));
    drop(cluster);
    assert!(!process_exists(pid), "postmaster {pid} still running");
    assert!(!root.exists(), "{} not removed", root.display());
    assert!(!socket_dir.exists(), "{} not removed", socket_dir.display());
}

#[test]
fn concurrent_clusters_get_distinct_ports() {
    let bins = bins();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let bins = bins.clone();
            std::thread::spawn(move || Cluster::start(&bins, ClusterOptions::default()).unwrap())
        })
        .collect();
    // The clusters outlive the threads that started them.
    let clusters: Vec<Cluster> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_ne!(clusters[0].port(), clusters[1].port());
    assert_ne!(clusters[0].data_dir(), clusters[1].data_dir());
    for c in &clusters {
        assert_eq!(
            c.psql("postgres", "show port").unwrap(),
            c.port().to_string()
        );
    }
}

#[test]
fn stop_is_idempotent_and_fast() {
    let mut cluster = Cluster::start(&bins(), ClusterOptions::default()).unwrap();
    let pid = cluster.pid().unwrap();
    let started = std::time::Instant::now();
    cluster.stop().unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(!process_exists(pid));
    assert_eq!(cluster.pid(), None);
    cluster.stop().unwrap();
    assert!(cluster.psql("postgres", "select 1").is_err());
}

#[test]
fn settings_are_applied_and_override_defaults() {
    let opts = ClusterOptions {
        fsync: true,
        settings: vec![
            ("max_connections".into(), "37".into()),
            ("log_statement".into(), "all".into()),
        ],
        ..Default::default()
    };
    let cluster = Cluster::start(&bins(), opts).unwrap();
    assert_eq!(
        cluster.psql("postgres", "show max_connections").unwrap(),
        "37"
    );
    assert_eq!(
        cluster.psql("postgres", "show log_statement").unwrap(),
        "all"
    );
    assert_eq!(cluster.psql("postgres", "show fsync").unwrap(), "on");
    cluster.psql("postgres", "select 'marker_4711'").unwrap();
    let log = std::fs::read_to_string(cluster.log_file()).unwrap();
    assert!(log.contains("marker_4711"), "statement not logged:\n{log}");
}

#[test]
fn explicit_port_is_used_and_a_taken_port_is_reported() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let opts = ClusterOptions {
        port: Some(port),
        ..Default::default()
    };
    let cluster = Cluster::start(&bins(), opts.clone()).unwrap();
    assert_eq!(cluster.port(), port);

    // Same explicit port again: no silent retry, a clear error quoting the log.
    let err = Cluster::start(&bins(), opts).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Start { .. }), "{msg}");
    assert!(msg.contains(&port.to_string()), "{msg}");
    assert!(msg.contains("already in use"), "{msg}");
}

#[test]
fn password_mode_requires_the_password_over_tcp() {
    let password = "s3cret p@ss'word";
    let opts = ClusterOptions {
        superuser_password: Some(password.into()),
        ..Default::default()
    };
    let cluster = Cluster::start(&bins(), opts).unwrap();
    assert_eq!(cluster.psql("postgres", "select 1").unwrap(), "1");
    assert_eq!(
        cluster.url("postgres"),
        format!(
            "postgresql://postgres:s3cret%20p%40ss%27word@127.0.0.1:{}/postgres",
            cluster.port()
        )
    );
    let hba = cluster
        .psql(
            "postgres",
            "select distinct auth_method from pg_hba_file_rules where type = 'host'",
        )
        .unwrap();
    assert_eq!(hba, "scram-sha-256");

    let psql = |pw: Option<&str>| {
        let mut cmd = Command::new(cluster.bins().path("psql"));
        cmd.args(["-X", "-A", "-t", "-w", "-h", "127.0.0.1", "-p"])
            .arg(cluster.port().to_string())
            .args(["-U", "postgres", "-d", "postgres", "-c", "select 1"])
            .env_remove("PGPASSFILE");
        match pw {
            Some(pw) => cmd.env("PGPASSWORD", pw),
            None => cmd.env_remove("PGPASSWORD"),
        };
        cmd.output().unwrap()
    };
    let wrong = psql(Some("wrong"));
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
    assert!(!psql(None).status.success());
    let right = psql(Some(password));
    assert!(
        right.status.success(),
        "{}",
        String::from_utf8_lossy(&right.stderr)
    );

    // The URL carries the password too (libpq decodes it).
    let by_url = Command::new(cluster.bins().path("psql"))
        .args(["-X", "-A", "-t", "-w", "-c", "select 7"])
        .arg(cluster.url("postgres"))
        .env_remove("PGPASSWORD")
        .output()
        .unwrap();
    assert!(
        by_url.status.success(),
        "{}",
        String::from_utf8_lossy(&by_url.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&by_url.stdout).trim(), "7");
}

#[test]
fn start_in_initializes_then_reuses_a_directory() {
    let parent = traversable_tempdir();
    let data_dir = parent.path().join("demo-data");
    let opts = ClusterOptions {
        keep: true,
        superuser_password: Some("first".into()),
        ..Default::default()
    };
    {
        let cluster = Cluster::start_in(&bins(), &data_dir, opts.clone()).unwrap();
        assert_eq!(cluster.data_dir(), data_dir);
        cluster.create_database("demo").unwrap();
        cluster
            .psql(
                "demo",
                "create table kept(v text); insert into kept values ('still here')",
            )
            .unwrap();
    }
    assert!(
        data_dir.join("PG_VERSION").is_file(),
        "kept dir was removed"
    );

    // Restart on the same directory, with another password and trust-free TCP.
    let opts = ClusterOptions {
        superuser_password: Some("second".into()),
        ..opts
    };
    let cluster = Cluster::start_in(&bins(), &data_dir, opts).unwrap();
    assert_eq!(
        cluster.psql("demo", "select v from kept").unwrap(),
        "still here"
    );
    drop(cluster);

    // Trust mode on the same directory; keep=false does not delete a directory it did not
    // create.
    let cluster = Cluster::start_in(&bins(), &data_dir, ClusterOptions::default()).unwrap();
    assert_eq!(
        cluster.psql("demo", "select count(*) from kept").unwrap(),
        "1"
    );
    drop(cluster);
    assert!(data_dir.join("PG_VERSION").is_file());
}

#[test]
fn start_in_removes_a_directory_it_created_unless_keep() {
    let parent = traversable_tempdir();
    let data_dir = parent.path().join("fresh");
    let cluster = Cluster::start_in(&bins(), &data_dir, ClusterOptions::default()).unwrap();
    assert_eq!(cluster.psql("postgres", "select 2").unwrap(), "2");
    drop(cluster);
    assert!(!data_dir.exists());
}

#[test]
fn start_in_refuses_a_non_cluster_directory() {
    let parent = traversable_tempdir();
    std::fs::write(parent.path().join("notes.txt"), "hello").unwrap();
    let err = Cluster::start_in(&bins(), parent.path(), ClusterOptions::default()).unwrap_err();
    assert!(matches!(err, Error::NotADataDir { .. }), "{err}");
    assert!(parent.path().join("notes.txt").is_file());
}

#[test]
fn keep_leaves_the_directory_and_parent_dir_is_honoured() {
    let parent = traversable_tempdir();
    let opts = ClusterOptions {
        parent_dir: Some(parent.path().to_path_buf()),
        keep: true,
        ..Default::default()
    };
    let cluster = Cluster::start(&bins(), opts).unwrap();
    let data_dir = cluster.data_dir().to_path_buf();
    assert!(data_dir.starts_with(parent.path()));
    drop(cluster);
    assert!(data_dir.join("PG_VERSION").is_file());
    assert!(
        !data_dir.join("postmaster.pid").exists(),
        "server not shut down cleanly"
    );
}

#[test]
fn long_parent_paths_get_a_short_socket_dir() {
    let parent = traversable_tempdir();
    let mut deep = parent.path().to_path_buf();
    for _ in 0..4 {
        deep.push("a-rather-long-directory-name-to-overflow-sun-path");
    }
    std::fs::create_dir_all(&deep).unwrap();
    let mut p: &Path = &deep;
    while p != parent.path() {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o711)).unwrap();
        p = p.parent().unwrap();
    }
    let opts = ClusterOptions {
        parent_dir: Some(deep.clone()),
        ..Default::default()
    };
    let cluster = Cluster::start(&bins(), opts).unwrap();
    assert!(cluster.data_dir().starts_with(&deep));
    assert!(!cluster.socket_dir().starts_with(&deep));
    assert_eq!(cluster.psql("postgres", "select 3").unwrap(), "3");
}

#[test]
fn root_needs_a_parent_dir_the_postgres_user_can_enter() {
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let opts = ClusterOptions {
        parent_dir: Some(private.path().to_path_buf()),
        ..Default::default()
    };
    let result = Cluster::start(&bins(), opts);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // postgres runs as the `postgres` user, which cannot enter a root-owned 0700 directory.
        let err = result.unwrap_err();
        assert!(matches!(err, Error::NotAccessible { .. }), "{err}");
        assert!(err.to_string().contains("chmod o+x"), "{err}");
    } else {
        // Not root: the server runs as us, and we own the directory.
        let cluster = result.unwrap();
        assert_eq!(cluster.psql("postgres", "select 1").unwrap(), "1");
    }
}

#[test]
fn large_sql_goes_through_stdin() {
    let cluster = Cluster::start(&bins(), ClusterOptions::default()).unwrap();
    let mut sql = String::from("create table big(v text);\n");
    for i in 0..5000 {
        sql.push_str(&format!(
            "insert into big values ('row {i} with some padding text');\n"
        ));
    }
    sql.push_str("select count(*) from big;");
    assert!(sql.len() > 128 * 1024);
    assert_eq!(cluster.psql("postgres", &sql).unwrap(), "5000");
}

#[test]
fn the_server_does_not_run_as_root() {
    let cluster = Cluster::start(&bins(), ClusterOptions::default()).unwrap();
    let pid = cluster.pid().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let euid: u32 = uid_line.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert_ne!(euid, 0, "{uid_line}");
}

const ORPHAN_HELPER_ENV: &str = "PG_EPHEMERAL_ORPHAN_HELPER";

/// Runs this very test in a child process (helper mode: start a cluster, print its pid, hang),
/// SIGKILLs that process and checks that the postmaster dies with it (PR_SET_PDEATHSIG).
#[test]
fn killed_owner_leaves_no_orphan_server() {
    use std::io::{BufRead, BufReader};

    if std::env::var_os(ORPHAN_HELPER_ENV).is_some() {
        // Helper mode: started from a thread that ends right away, to show that the server
        // does not depend on the starting thread either.
        let cluster = std::thread::spawn(|| Cluster::start(&bins(), ClusterOptions::default()))
            .join()
            .unwrap()
            .unwrap();
        println!(
            "ORPHAN_HELPER pid={} dir={}",
            cluster.pid().unwrap(),
            cluster.data_dir().parent().unwrap().display()
        );
        std::thread::sleep(std::time::Duration::from_secs(3));
        // Still alive after its starting thread ended.
        assert_eq!(cluster.psql("postgres", "select 1").unwrap(), "1");
        println!("ORPHAN_HELPER alive");
        std::thread::sleep(std::time::Duration::from_secs(600));
        return;
    }

    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "killed_owner_leaves_no_orphan_server",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ORPHAN_HELPER_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(helper.stdout.take().unwrap()).lines();
    let mut pid = None;
    let mut dir = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        // The harness prints "test <name> ... " without a newline before our output.
        if let Some((_, rest)) = line.split_once("ORPHAN_HELPER pid=") {
            let (p, d) = rest.split_once(" dir=").unwrap();
            pid = Some(p.parse::<u32>().unwrap());
            dir = Some(std::path::PathBuf::from(d));
        }
        if line.ends_with("ORPHAN_HELPER alive") {
            break;
        }
    }
    let (pid, dir) = match (pid, dir) {
        (Some(p), Some(d)) => (p, d),
        _ => {
            let _ = helper.kill();
            let status = helper.wait().unwrap();
            panic!("helper ended ({status}) without reporting a running cluster");
        }
    };
    assert!(process_alive(pid));
    helper.kill().unwrap();
    helper.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while process_alive(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        !process_alive(pid),
        "postmaster {pid} outlived its killed owner"
    );
    // The killed helper could not clean up; do it here.
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Alive and not a zombie (an unreaped zombie has already let go of everything).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
