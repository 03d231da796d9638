//! A real PostgreSQL for store tests: Debian's `postgresql` package, which
//! `scripts/test` installs. One server serves the whole test run (each
//! nextest test is a process of its own, so the first one to need it
//! starts it, under a file lock, and the others find it running); every
//! control plane gets a database of its own. The cluster lives under
//! Cargo's test scratch directory, runs as an unprivileged user (`postgres`
//! when the tests run as root) and listens on loopback only.
//! `scripts/test` stops it when the run ends.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::eventually;

/// Where the test run's cluster lives.
pub fn cluster_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("postgres")
}

/// Whether the tests asked for every control plane's store in PostgreSQL
/// (`OUTPOST_TEST_STORE=postgres`), to run the whole suite against it.
pub fn wanted_for_every_test() -> bool {
    std::env::var("OUTPOST_TEST_STORE").is_ok_and(|store| store == "postgres")
}

/// A new, empty database on the test run's server: its URL for `--store`.
pub fn database() -> String {
    let port = server();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("outpost_{}_{nanos}", std::process::id());
    let created = psql(port, "postgres", &format!("CREATE DATABASE {name}"));
    assert!(
        created.status.success(),
        "CREATE DATABASE: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    format!("postgres://postgres@127.0.0.1:{port}/{name}")
}

/// Runs one statement with `psql` on `database`.
pub fn psql(port: u16, database: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .args(["-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-U", "postgres"])
        .args(["-p", &port.to_string(), "-d", database, "-c", sql])
        .output()
        .expect("psql (Debian's postgresql package; scripts/test installs it)")
}

/// The port of the test run's server, started if it is not running.
pub fn server() -> u16 {
    let dir = cluster_dir();
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.with_extension("lock"))
        .unwrap();
    lock.lock().unwrap();
    let port_file = dir.with_extension("port");
    if let Some(port) = std::fs::read_to_string(&port_file)
        .ok()
        .and_then(|p| p.trim().parse().ok())
        && psql(port, "postgres", "SELECT 1").status.success()
    {
        return port;
    }
    let port = start(&dir);
    std::fs::write(&port_file, port.to_string()).unwrap();
    drop(lock);
    port
}

fn start(dir: &Path) -> u16 {
    let bin = postgres_bin();
    let as_root = is_root();
    if !dir.join("PG_VERSION").exists() {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        if as_root {
            chown_to_postgres(dir);
        }
        let initdb = unprivileged(as_root, &bin.join("initdb"))
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            initdb.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Durability is not under test here (a SIGKILLed control plane, not a
    // crashed machine), so fsync is off to keep the suite quick.
    let options = format!(
        "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c synchronous_commit=off \
         -c full_page_writes=off -c max_connections=400",
        dir.display()
    );
    let started = unprivileged(as_root, &bin.join("pg_ctl"))
        .args(["start", "-w", "-D"])
        .arg(dir)
        .arg("-l")
        .arg(dir.join("server.log"))
        .args(["-o", &options])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        started.status.success(),
        "pg_ctl start: {}{}",
        String::from_utf8_lossy(&started.stderr),
        std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
    );
    eventually(
        Duration::from_secs(30),
        "PostgreSQL accepting connections",
        || psql(port, "postgres", "SELECT 1").status.success().then_some(()),
    );
    port
}

/// Debian keeps the server's programs out of PATH, by major version.
fn postgres_bin() -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL (Debian's postgresql package; scripts/test installs it)");
    let mut versions: Vec<u32> = versions
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort_unstable();
    let newest = versions
        .last()
        .expect("a PostgreSQL version under /usr/lib/postgresql");
    PathBuf::from(format!("/usr/lib/postgresql/{newest}/bin"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// PostgreSQL refuses to run as root: as root, the server runs as the
/// `postgres` user the Debian package made.
fn unprivileged(as_root: bool, program: &Path) -> Command {
    if as_root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn chown_to_postgres(dir: &Path) {
    let status = Command::new("chown")
        .args(["postgres:postgres"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success(), "chown postgres {}", dir.display());
}
