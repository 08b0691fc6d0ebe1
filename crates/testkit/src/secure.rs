//! Real components for connection tests: a PostgreSQL cluster with TLS on and `pg_hba.conf` lines
//! that demand TLS, certificates or passwords per role, and an OpenSSH server that forwards to it.
//! Each lives in its own directory and is stopped and removed when dropped.
//!
//! Roles (all with password [`PASSWORD`]): `tls_user` only over TLS, `plain_user` only without,
//! `pass_user` either way, `cert_user` only with a client certificate (CN `cert_user`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The password of every role of [`TlsCluster`].
pub const PASSWORD: &str = "s3cret-Pa55";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `cmd` as the `postgres` OS user when this runs as root (initdb and postgres refuse root).
fn as_postgres(program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", program]).current_dir("/");
        c
    } else {
        Command::new(program)
    }
}

/// Whether the tests run as root (CI does; creating an OS user for SSH password auth needs it).
pub fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

/// A fresh directory under /var/tmp that the postgres user can use.
fn scratch_dir(prefix: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = PathBuf::from(format!("/var/tmp/{prefix}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A CA, a server certificate for `localhost` and `127.0.0.1`, a client certificate for
/// `cert_user`, and a second CA that signed nothing here (an untrusted root).
pub struct Certificates {
    /// The CA's certificate (PEM file): sslrootcert.
    pub ca: PathBuf,
    /// Another CA's certificate: a root the server's certificate does not chain to.
    pub other_ca: PathBuf,
    /// Client certificate for `cert_user` and its key.
    pub client_cert: PathBuf,
    /// Key of [`Certificates::client_cert`].
    pub client_key: PathBuf,
    server_cert: String,
    server_key: String,
}

impl Certificates {
    fn generate(dir: &Path) -> Certificates {
        let ca_for = |name: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, name);
            CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
        };
        let ca = ca_for("hyperflight test CA");
        let other = ca_for("some other CA");
        let leaf = |names: Vec<String>, cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(names).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            (p.signed_by(&key, &ca).unwrap().pem(), key.serialize_pem())
        };
        let (server_cert, server_key) =
            leaf(vec!["localhost".into(), "127.0.0.1".into()], "localhost");
        let (client_cert, client_key) = leaf(vec![], "cert_user");
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        Certificates {
            ca: write("ca.pem", &ca.pem()),
            other_ca: write("other-ca.pem", &other.pem()),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
            server_cert,
            server_key,
        }
    }
}

/// A PostgreSQL 15 cluster with `ssl = on`, TimescaleDB preloaded, on a free loopback port.
pub struct TlsCluster {
    dir: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Certificates: the CA to trust, a client certificate.
    pub certs: Certificates,
}

impl TlsCluster {
    /// initdb, certificates, pg_hba lines and roles; then started.
    pub fn start() -> TlsCluster {
        let dir = scratch_dir("hyperflight-tls");
        let certs = Certificates::generate(&dir);
        let data = dir.join("data");
        if is_root() {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir));
        }
        run(as_postgres(&format!("{PG_BIN}/initdb"))
            .args(["-A", "trust", "--no-sync", "-U", "postgres", "-D"])
            .arg(&data));
        std::fs::write(data.join("server.crt"), &certs.server_cert).unwrap();
        std::fs::write(data.join("server.key"), &certs.server_key).unwrap();
        std::fs::copy(&certs.ca, data.join("ca.crt")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let port = crate::free_port();
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             ssl = on\nssl_ca_file = 'ca.crt'\nshared_preload_libraries = 'timescaledb'\n\
             timescaledb.telemetry_level = off\nfsync = off\npassword_encryption = 'scram-sha-256'\n",
            dir.display()
        );
        append(&data.join("postgresql.conf"), &conf);
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all tls_user 127.0.0.1/32 scram-sha-256\n\
             hostnossl all plain_user 127.0.0.1/32 scram-sha-256\n\
             host all pass_user 127.0.0.1/32 scram-sha-256\n\
             hostssl all cert_user 127.0.0.1/32 cert\n",
        )
        .unwrap();
        if is_root() {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir));
        }
        run(as_postgres(&format!("{PG_BIN}/pg_ctl"))
            .args(["-w", "-t", "60", "-l"])
            .arg(dir.join("server.log"))
            .arg("-D")
            .arg(&data)
            .arg("start"));
        let cluster = TlsCluster { dir, port, certs };
        cluster.psql(&format!(
            "CREATE ROLE tls_user LOGIN PASSWORD '{PASSWORD}';
             CREATE ROLE plain_user LOGIN PASSWORD '{PASSWORD}';
             CREATE ROLE pass_user LOGIN PASSWORD '{PASSWORD}';
             CREATE ROLE cert_user LOGIN;
             CREATE TABLE public.readings (id int PRIMARY KEY, v double precision);
             INSERT INTO public.readings SELECT g, g * 0.5 FROM generate_series(1, 1000) g;
             GRANT SELECT ON public.readings TO tls_user, plain_user, pass_user, cert_user;"
        ));
        cluster
    }

    /// Runs SQL as the superuser over the socket; returns psql's unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        run(as_postgres(&format!("{PG_BIN}/psql"))
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args(["-p", &self.port.to_string(), "-d", "postgres", "-c", sql]))
    }

    /// The scratch directory (certificates and files tests write live there).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let _ = as_postgres(&format!("{PG_BIN}/pg_ctl"))
            .args(["-m", "immediate", "-D"])
            .arg(self.dir.join("data"))
            .arg("stop")
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

/// The OS user SSH password tests log in as (created on first use; its password is new each run).
pub const SSH_PASSWORD_USER: &str = "hyperflight-tunnel";

/// An OpenSSH server on a free loopback port with its own host key, accepting a generated user key
/// for the current user and, when run as root, a password for [`SSH_PASSWORD_USER`].
pub struct Sshd {
    dir: PathBuf,
    child: std::process::Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The current OS user (key authentication).
    pub user: String,
    /// The user's private key (OpenSSH format text).
    pub user_key: String,
    /// A known-hosts file with this server's host key.
    pub known_hosts: PathBuf,
    /// A known-hosts file with a different key for this server (a changed host key).
    pub wrong_known_hosts: PathBuf,
    /// [`SSH_PASSWORD_USER`]'s password this run (`None` when not root).
    pub password: Option<String>,
}

impl Sshd {
    /// Generates keys, writes a config, starts `sshd -D`, and waits until it accepts connections.
    pub async fn start() -> Sshd {
        let dir = scratch_dir("hyperflight-sshd");
        let keygen = |name: &str| {
            let path = dir.join(name);
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(&path));
            path
        };
        let host_key = keygen("host_key");
        let other_host_key = keygen("other_host_key");
        let user_key = keygen("user_key");
        let authorized = dir.join("authorized_keys");
        std::fs::copy(user_key.with_extension("pub"), &authorized).unwrap();
        let port = crate::free_port();
        let known = |key: &Path, file: &str| {
            let pubkey = std::fs::read_to_string(key.with_extension("pub")).unwrap();
            let path = dir.join(file);
            std::fs::write(&path, format!("[127.0.0.1]:{port} {pubkey}")).unwrap();
            path
        };
        let known_hosts = known(&host_key, "known_hosts");
        let wrong_known_hosts = known(&other_host_key, "wrong_known_hosts");
        let password = is_root().then(ensure_password_user);
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {}\nPidFile {}\n\
                 AuthorizedKeysFile {}\nStrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication yes\nKbdInteractiveAuthentication no\n\
                 AllowTcpForwarding yes\nPermitOpen any\nLogLevel VERBOSE\n",
                host_key.display(),
                dir.join("sshd.pid").display(),
                authorized.display(),
            ),
        )
        .unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
            .spawn()
            .expect("start /usr/sbin/sshd (Debian's openssh-server)");
        crate::wait_until(
            Duration::from_secs(20),
            "sshd accepts connections",
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            },
        )
        .await;
        Sshd {
            user: std::env::var("USER").unwrap_or_else(|_| "root".into()),
            user_key: std::fs::read_to_string(&user_key).unwrap(),
            dir,
            child,
            port,
            known_hosts,
            wrong_known_hosts,
            password,
        }
    }

    /// sshd's log (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Creates [`SSH_PASSWORD_USER`] (no home, no login shell) if missing, with a random password drawn
/// once per machine and kept in a root-only file (test processes run in parallel: they must agree).
fn ensure_password_user() -> String {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let file = Path::new("/var/lib/hyperflight-tests/tunnel-password");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
    {
        Ok(mut f) => write!(f, "pw-{:016x}", rand_u64()).unwrap(),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => panic!("{}: {e}", file.display()),
    }
    let mut password = String::new();
    for _ in 0..100 {
        password = std::fs::read_to_string(file).unwrap();
        if !password.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let exists = || {
        Command::new("id")
            .arg(SSH_PASSWORD_USER)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !exists() {
        // Another test process may create it at the same moment: only the outcome counts.
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(SSH_PASSWORD_USER)
            .output();
        assert!(exists(), "cannot create OS user {SSH_PASSWORD_USER}");
    }
    let mut child = Command::new("chpasswd")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(
        child.stdin.take().unwrap(),
        "{SSH_PASSWORD_USER}:{password}"
    )
    .unwrap();
    assert!(child.wait().unwrap().success(), "chpasswd failed");
    password
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}
