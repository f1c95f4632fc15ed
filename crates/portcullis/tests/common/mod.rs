//! Test harness: a real PostgreSQL cluster (pg-ephemeral), the real `portcullis` binary in
//! front of it, and helpers to drive real clients (psql, pgbench, Python psycopg/asyncpg).
//! Nothing is skipped: a missing tool fails with the install step.
#![allow(dead_code)]

pub mod idp;

use pg_ephemeral::{Cluster, ClusterOptions, PgBinaries};
use portcullis_core::EventData;
use portcullis_ledger::{LedgerReader, StoredEvent};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const TARGET_PASSWORD: &str = "target-secret-never-shown-to-agents";
pub const DB: &str = "app";

pub fn bins() -> PgBinaries {
    PgBinaries::find().unwrap_or_else(|e| panic!("{e}"))
}

/// A target cluster with database `app`, password auth over TCP.
pub fn target(settings: &[(&str, &str)]) -> Cluster {
    let cluster = Cluster::start(
        &bins(),
        ClusterOptions {
            superuser_password: Some(TARGET_PASSWORD.into()),
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("cannot start the target cluster: {e}"));
    cluster
        .create_database(DB)
        .unwrap_or_else(|e| panic!("create database: {e}"));
    cluster
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// An agent: name + API key + its SCRAM verifier.
pub struct Agent {
    pub name: String,
    pub key: String,
    pub key_hash: String,
}

pub fn agent(name: &str) -> Agent {
    let key = portcullis_identity::generate_api_key();
    let key_hash = portcullis_identity::ScramVerifier::from_password(&key, 4096).to_string();
    Agent {
        name: name.into(),
        key,
        key_hash,
    }
}

pub struct GatewayOptions {
    pub durability: &'static str,
    pub extra_listener: &'static str,
    pub extra_connections: String,
    pub tls_mode: &'static str,
    /// Files written into the gateway's folder before it starts (name, contents).
    pub files: Vec<(String, Vec<u8>)>,
    /// `[policy] files = [...]`; empty = a `policies.cedar` that permits everything.
    pub policy_files: Vec<String>,
    /// Groups of the test agent.
    pub groups: Vec<String>,
    /// Appended to the configuration file (more agents, `[identity]`, `[api]`, …).
    pub extra_config: String,
    /// More lines of the `[store]` table (`kind = "postgres"`, `url = …`).
    pub store: String,
    /// More lines of the test database's `[[connections]]` entry (`recording = "full"`).
    pub connection: String,
}

/// The policy most tests run under: everything allowed (they test the relay, not policy).
pub const PERMIT_ALL: &str = "permit(principal, action, resource);\n";

/// The repository's `examples/policies` folder.
pub fn example_policies() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies").to_string()
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            durability: "default",
            extra_listener: "",
            extra_connections: String::new(),
            tls_mode: "optional",
            files: Vec::new(),
            policy_files: Vec::new(),
            groups: Vec::new(),
            extra_config: String::new(),
            store: String::new(),
            connection: String::new(),
        }
    }
}

/// A running `portcullis serve` process.
pub struct Gateway {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub port: u16,
    pub agent: Agent,
    child: Option<Child>,
    pub stderr_log: PathBuf,
}

pub fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

impl Gateway {
    pub fn start(cluster: &Cluster, opts: GatewayOptions) -> Gateway {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-test-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let agent = agent("test-agent");
        std::fs::write(dir.path().join("target-password"), TARGET_PASSWORD).expect("write pw");
        let policy_files = if opts.policy_files.is_empty() {
            std::fs::write(dir.path().join("policies.cedar"), PERMIT_ALL).expect("write policy");
            vec!["policies.cedar".to_string()]
        } else {
            opts.policy_files.clone()
        };
        for (name, contents) in &opts.files {
            std::fs::write(dir.path().join(name), contents).expect("write file");
        }
        let config = dir.path().join("portcullis.toml");
        let text = format!(
            r#"
[gateway]
data_dir = "data"

[store]
durability = "{durability}"
{store}

[policy]
files = {policy_files:?}

[[listeners]]
name = "pg"
protocol = "postgres"
bind = "127.0.0.1:{port}"
tls = {{ mode = "{tls_mode}" }}
{extra_listener}

[[connections]]
name = "{DB}"
type = "postgres"
host = "127.0.0.1"
port = {pg_port}
database = "{DB}"
user = "postgres"
password_file = "target-password"
{connection}

[[connections]]
name = "unreachable"
type = "postgres"
host = "127.0.0.1"
port = {dead_port}
database = "x"
user = "x"
connect_timeout_ms = 2000
{extra_connections}

[[agents]]
name = "{agent_name}"
key_hash = "{key_hash}"
groups = {groups:?}
{extra_config}
"#,
            durability = opts.durability,
            tls_mode = opts.tls_mode,
            extra_listener = opts.extra_listener,
            extra_connections = opts.extra_connections,
            pg_port = cluster.port(),
            dead_port = free_port(),
            agent_name = agent.name,
            key_hash = agent.key_hash,
            groups = opts.groups,
            extra_config = opts.extra_config,
            store = opts.store,
            connection = opts.connection,
        );
        std::fs::write(&config, text).expect("write config");
        let mut gw = Gateway {
            stderr_log: dir.path().join("gateway.log"),
            dir,
            config,
            port,
            agent,
            child: None,
        };
        gw.spawn();
        gw
    }

    /// Starts `portcullis serve` and waits until it listens. If another test took the port
    /// between `free_port` and the bind, moves to a new port (up to three times).
    pub fn spawn(&mut self) {
        for _ in 0..3 {
            if self.try_spawn() {
                return;
            }
            let fresh = free_port();
            let text = std::fs::read_to_string(&self.config).expect("read config");
            let text = text.replace(
                &format!("bind = \"127.0.0.1:{}\"", self.port),
                &format!("bind = \"127.0.0.1:{fresh}\""),
            );
            std::fs::write(&self.config, text).expect("write config");
            self.port = fresh;
        }
        panic!("the gateway could not bind a port three times");
    }

    /// `false` when the gateway exited because its port was taken.
    fn try_spawn(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_log)
            .expect("log file");
        let child = Command::new(exe())
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info,portcullis_proto_postgres=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn portcullis serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    let log = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
                    if log.contains("cannot bind") {
                        return false;
                    }
                    panic!("portcullis serve exited with {status}:\n{log}");
                }
            }
            assert!(Instant::now() < deadline, "gateway did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// SIGKILL: no chance to drain or sync anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: the gateway drains and syncs its ledger.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("gateway did not stop within 20 s after SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.dir.path().join("data").join("ledger.db")
    }

    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql://{}:{}@127.0.0.1:{}/{db}",
            self.agent.name, self.agent.key, self.port
        )
    }

    /// A tokio-postgres session through the gateway as the agent (its connection task is
    /// spawned on the current runtime).
    pub async fn tokio_client(&self) -> tokio_postgres::Client {
        let (client, conn) = self
            .tokio_config()
            .connect(tokio_postgres::NoTls)
            .await
            .expect("connect through the gateway");
        tokio::spawn(conn);
        client
    }

    pub fn tokio_config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(&self.agent.name)
            .password(&self.agent.key)
            .dbname(DB);
        config
    }

    /// psql through the gateway as the agent.
    pub fn psql(&self, args: &[&str]) -> Output {
        self.psql_as(&self.agent.name, &self.agent.key, DB, "prefer", args)
    }

    pub fn psql_as(
        &self,
        user: &str,
        password: &str,
        db: &str,
        sslmode: &str,
        args: &[&str],
    ) -> Output {
        Command::new(bins().path("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args(["-p", &self.port.to_string(), "-U", user, "-d", db])
            .args(args)
            .env("PGPASSWORD", password)
            .env("PGSSLMODE", sslmode)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .expect("run psql")
    }

    /// Waits until the ledger holds at least `n` events of `kind` (result events are written
    /// after the client already has its answer).
    pub fn wait_for(&self, kind: &str, n: usize) -> Vec<StoredEvent> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let evs = self.events_of(kind);
            if evs.len() >= n || Instant::now() > deadline {
                return evs;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every event, once the gateway has indexed what it acknowledged: readers see events
    /// within one sync interval (5 ms), so this waits until the count holds still for 100 ms.
    pub fn events(&self) -> Vec<StoredEvent> {
        let r = LedgerReader::open(&self.ledger_path()).expect("open ledger");
        let mut count = r.count().expect("count");
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = r.count().expect("count");
            if now == count {
                break;
            }
            count = now;
        }
        r.after(0, usize::MAX >> 1).expect("read ledger")
    }

    pub fn events_of(&self, kind: &str) -> Vec<StoredEvent> {
        self.events()
            .into_iter()
            .filter(|e| e.kind == kind)
            .collect()
    }

    pub fn statements(&self) -> Vec<(u64, EventData)> {
        self.events_of("statement")
            .into_iter()
            .map(|e| (e.seq, e.parse().expect("parse statement")))
            .collect()
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(exe())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .expect("run portcullis")
    }

    /// Process id of the running gateway.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(|c| c.id())
            .expect("gateway running")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "command failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// psql straight to the target (the differential baseline).
pub fn psql_direct(cluster: &Cluster, args: &[&str]) -> Output {
    Command::new(bins().path("psql"))
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
        ])
        .args([
            "-p",
            &cluster.port().to_string(),
            "-U",
            "postgres",
            "-d",
            DB,
        ])
        .args(args)
        .env("PGPASSWORD", TARGET_PASSWORD)
        .output()
        .expect("run psql")
}

/// The Python interpreter with psycopg 3 and asyncpg, prepared by scripts/test.sh.
pub fn python() -> PathBuf {
    let candidates = [
        std::env::var_os("PORTCULLIS_PYTHON").map(PathBuf::from),
        std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".cache/portcullis/venv/bin/python")),
    ];
    for c in candidates.into_iter().flatten() {
        if c.exists() {
            let check = Command::new(&c)
                .args(["-c", "import psycopg, asyncpg"])
                .output();
            if matches!(check, Ok(o) if o.status.success()) {
                return c;
            }
        }
    }
    panic!(
        "no Python with psycopg 3 and asyncpg: run ./scripts/test.sh once (it creates ~/.cache/portcullis/venv), \
         or `python3 -m venv ~/.cache/portcullis/venv && ~/.cache/portcullis/venv/bin/pip install 'psycopg[binary]' asyncpg`, \
         or set PORTCULLIS_PYTHON"
    )
}

pub fn clients_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/clients.py")
}

/// Runs one scenario of tests/clients/clients.py against `dsn`; returns its stdout.
pub fn python_client(scenario: &str, dsn: &str, extra: &[&str]) -> Output {
    Command::new(python())
        .arg(clients_script())
        .arg(scenario)
        .arg(dsn)
        .args(extra)
        .output()
        .expect("run python client")
}

/// Follows a gateway's log until `needle` shows up (for debugging failures).
pub fn grep_log(path: &Path, needle: &str) -> bool {
    std::fs::File::open(path)
        .map(|f| {
            BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .any(|l| l.contains(needle))
        })
        .unwrap_or(false)
}

/// pgbench through the gateway as the agent, with `args` (the database name goes last).
pub fn pgbench_command(gw: &Gateway, args: &[&str]) -> Command {
    let mut c = Command::new(bins().path("pgbench"));
    c.args([
        "-h",
        "127.0.0.1",
        "-p",
        &gw.port.to_string(),
        "-U",
        &gw.agent.name,
    ])
    .args(args)
    .env("PGPASSWORD", &gw.agent.key)
    .env("PGSSLMODE", "disable");
    c
}

/// SIGKILLs the gateway `rounds` times, each while pgbench inserts through it (the target must
/// run with `log_statement = 'all'`), restarting it and checking `audit verify` after each
/// restart. Then every INSERT the target's log shows must be among `recorded(gw)`, the
/// statement texts the ledger holds.
pub fn kill_under_pgbench(
    gw: &mut Gateway,
    cluster: &Cluster,
    rounds: u64,
    recorded: impl Fn(&Gateway) -> std::collections::HashSet<String>,
) {
    let out = psql_direct(cluster, &["-c", "CREATE TABLE marks (n bigint)"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for round in 0..rounds {
        let script = gw.dir.path().join("insert.sql");
        std::fs::write(
            &script,
            format!("\\set r random(1, 999999)\nINSERT INTO marks VALUES ({round} * 100000000 + :client_id * 1000000 + :r);\n"),
        )
        .expect("script");
        let mut bench = pgbench_command(gw, &["-n", "-c", "4", "-j", "2", "-T", "30", "-f"])
            .arg(&script)
            .arg(DB)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pgbench");
        // Kill at a different moment in each round.
        std::thread::sleep(Duration::from_millis(500 + 137 * (round % 7)));
        gw.kill();
        let _ = bench.wait();
        gw.spawn();
        let verify = gw.cli(&["audit", "verify"]);
        assert!(
            stdout(&verify).contains("ledger OK"),
            "after kill {}: {}{}",
            round + 1,
            stdout(&verify),
            stderr(&verify)
        );
    }
    gw.stop();
    let log = std::fs::read_to_string(cluster.log_file()).expect("target log");
    let ran: Vec<String> = log
        .lines()
        .filter_map(|l| l.split("statement: ").nth(1))
        .filter(|s| s.starts_with("INSERT INTO marks VALUES"))
        .map(str::to_string)
        .collect();
    assert!(ran.len() > 100, "the target ran only {} inserts", ran.len());
    let recorded = recorded(gw);
    let missing: Vec<&String> = ran.iter().filter(|s| !recorded.contains(*s)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} statements ran without a ledger event, e.g. {:?}",
        missing.len(),
        ran.len(),
        missing.first()
    );
    let verify = ok(gw.cli(&["audit", "verify"]));
    assert!(verify.contains("ledger OK"), "{verify}");
}

/// A moto S3 server on a free port (moto[server] from PyPI, in the test venv).
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Creates `bucket` and returns the TOML lines that point a gateway at it (prefix `gw1`,
    /// test fixture credentials in the environment: moto accepts any).
    pub fn bucket(&self, bucket: &str) -> String {
        boto(self.port, &format!("s3.create_bucket(Bucket='{bucket}')"));
        std::env::set_var("PORTCULLIS_TEST_S3_KEY", "test");
        std::env::set_var("PORTCULLIS_TEST_S3_SECRET", "test");
        format!(
            "bucket = \"{bucket}\"\nprefix = \"gw1\"\nendpoint = \"http://127.0.0.1:{}\"\n\
             allow_http = true\naccess_key_id_env = \"PORTCULLIS_TEST_S3_KEY\"\n\
             secret_access_key_env = \"PORTCULLIS_TEST_S3_SECRET\"\n",
            self.port
        )
    }

    /// The keys of every object in `bucket`.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        boto(
            self.port,
            &format!(
                "print('\\n'.join(o['Key'] for o in s3.list_objects_v2(Bucket='{bucket}').get('Contents', [])))"
            ),
        )
        .lines()
        .map(str::to_string)
        .collect()
    }
}

pub fn moto() -> Moto {
    let py = python();
    let probe = Command::new(&py)
        .args(["-c", "import moto.server, boto3"])
        .output()
        .expect("run python");
    assert!(
        probe.status.success(),
        "moto is needed for the S3 test: {} -m pip install 'moto[server]' (scripts/test.sh does)",
        py.display()
    );
    let port = free_port();
    let child = Command::new(&py)
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto { child, port }
}

pub fn boto(port: u16, code: &str) -> String {
    let script = format!(
        "import boto3\ns3 = boto3.client('s3', endpoint_url='http://127.0.0.1:{port}', \
         aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1')\n{code}"
    );
    ok(Command::new(python())
        .args(["-c", &script])
        .output()
        .expect("run boto3"))
}

/// Every file under `dir`, recursively (the folder must exist).
pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
