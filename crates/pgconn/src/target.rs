//! Where and how to connect, resolved the way libpq resolves it: the connection string (URL or
//! key=value) first, then the caller's settings, then the `PG*` environment, then `.pgpass` for the
//! password, then libpq's defaults.
//!
//! tokio-postgres parses the connection string; the parameters it does not know (sslmode's
//! libpq-only values, sslrootcert, sslcert, sslkey, passfile) are taken out first and kept here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use tokio_postgres::config::Host;

use crate::tunnel::TunnelSettings;
use crate::ConnectError;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// Without TLS; with TLS (unverified) only if the server refuses the plain connection.
    Allow,
    /// With TLS (unverified) if the server supports it; without if it does not, or refuses it.
    Prefer,
    /// TLS, certificate not checked (checked against sslrootcert when that is given).
    Require,
    /// TLS, certificate chain checked against sslrootcert.
    VerifyCa,
    /// TLS, certificate chain and host name checked.
    VerifyFull,
}

impl SslMode {
    /// All names, in libpq's order.
    pub const NAMES: [&'static str; 6] = [
        "disable",
        "allow",
        "prefer",
        "require",
        "verify-ca",
        "verify-full",
    ];

    /// The mode for a libpq name.
    pub fn parse(name: &str) -> Result<SslMode, ConnectError> {
        Ok(match name {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(ConnectError::Config(format!(
                    "sslmode {other:?} is not one of {}",
                    Self::NAMES.join(", ")
                )))
            }
        })
    }

    /// The libpq name.
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// PEM text, in a file or given inline (the Airbyte source's config carries certificates as text).
#[derive(Clone, PartialEq, Eq)]
pub enum Pem {
    /// A file.
    File(PathBuf),
    /// The text itself.
    Inline(String),
}

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Pem {
    /// The file's path, or `(inline)`: what messages show (a key's text is a secret).
    pub fn describe(&self) -> String {
        match self {
            Pem::File(p) => p.display().to_string(),
            Pem::Inline(_) => "(inline)".into(),
        }
    }
}

/// Where trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// CA certificates.
    Pem(Pem),
    /// The operating system's trust store (`sslrootcert=system`).
    System,
}

/// TLS settings, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// The mode.
    pub mode: SslMode,
    /// Trusted roots, when the mode checks certificates (or `require` was given roots).
    pub root_cert: Option<RootCert>,
    /// Client certificate chain and its key, for `cert` authentication.
    pub client: Option<(Pem, Pem)>,
}

/// The libpq parameters tokio-postgres does not take, by their libpq names. Also the shape of the
/// settings that may give them outside the connection string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    /// `sslmode`.
    pub sslmode: Option<String>,
    /// `sslrootcert`: a file, or `system`.
    pub sslrootcert: Option<String>,
    /// `sslcert`.
    pub sslcert: Option<String>,
    /// `sslkey`.
    pub sslkey: Option<String>,
    /// `passfile` (libpq's name; `PGPASSFILE` in the environment).
    pub passfile: Option<String>,
}

impl Params {
    fn slot(&mut self, key: &str) -> Option<&mut Option<String>> {
        Some(match key {
            "sslmode" => &mut self.sslmode,
            "sslrootcert" => &mut self.sslrootcert,
            "sslcert" => &mut self.sslcert,
            "sslkey" => &mut self.sslkey,
            "passfile" => &mut self.passfile,
            _ => return None,
        })
    }

    /// Fills what `self` lacks from `other`.
    fn or(self, other: &Params) -> Params {
        let pick = |a: Option<String>, b: &Option<String>| a.or_else(|| b.clone());
        Params {
            sslmode: pick(self.sslmode, &other.sslmode),
            sslrootcert: pick(self.sslrootcert, &other.sslrootcert),
            sslcert: pick(self.sslcert, &other.sslcert),
            sslkey: pick(self.sslkey, &other.sslkey),
            passfile: pick(self.passfile, &other.passfile),
        }
    }
}

/// Everything needed to connect.
#[derive(Clone)]
pub struct Target {
    /// What tokio-postgres connects with (hosts, ports, role, database, password, options, …).
    pub pg: tokio_postgres::Config,
    /// TLS.
    pub tls: TlsOptions,
    /// The SSH tunnel to reach the host through, if any.
    pub tunnel: Option<TunnelSettings>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Where the defaults come from: the process environment, or a fixed map in tests.
pub trait Environment {
    /// The variable's value, if set and not empty.
    fn var(&self, name: &str) -> Option<String>;
    /// The home directory (for `~/.pgpass` and `~/.postgresql/`).
    fn home(&self) -> Option<PathBuf> {
        self.var("HOME").map(PathBuf::from)
    }
}

/// The process environment.
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Environment for BTreeMap<&str, &str> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| v.to_string())
    }
}

impl Target {
    /// Resolves `conninfo` (a `postgres://` URL, or libpq's key=value form; empty means all from
    /// `settings` and the environment). `settings` fill what the string leaves out; `password`,
    /// when given (from a password file setting), overrides every other source.
    pub fn resolve(
        conninfo: &str,
        settings: &Params,
        password: Option<&str>,
        env: &dyn Environment,
    ) -> Result<Target, ConnectError> {
        let (rest, given) = split(conninfo)?;
        let mut pg: tokio_postgres::Config = if rest.trim().is_empty() {
            tokio_postgres::Config::new()
        } else {
            rest.parse().map_err(|e| {
                ConnectError::Config(format!(
                    "not a PostgreSQL connection string (postgres://user@host:port/db or key=value form): {e}"
                ))
            })?
        };
        let env_params = Params {
            sslmode: env.var("PGSSLMODE"),
            sslrootcert: env.var("PGSSLROOTCERT"),
            sslcert: env.var("PGSSLCERT"),
            sslkey: env.var("PGSSLKEY"),
            passfile: env.var("PGPASSFILE"),
        };
        let params = given.or(settings).or(&env_params);
        apply_env(&mut pg, env)?;
        if let Some(p) = password {
            pg.password(p);
        } else if pg.get_password().is_none() {
            if let Some(p) = env.var("PGPASSWORD") {
                pg.password(p);
            } else if let Some(p) = pgpass(&pg, &params, env) {
                pg.password(p);
            }
        }
        let tls = tls_options(&params, env)?;
        Ok(Target {
            pg,
            tls,
            tunnel: None,
        })
    }

    /// The first host and port, for messages and tunnels.
    pub fn address(&self) -> String {
        let host = host_name(self.pg.get_hosts().first());
        match self.pg.get_hosts().first() {
            Some(Host::Unix(_)) => host,
            _ => format!(
                "{host}:{}",
                self.pg.get_ports().first().copied().unwrap_or(5432)
            ),
        }
    }

    /// The role (always set after [`Target::resolve`]).
    pub fn role(&self) -> &str {
        self.pg.get_user().unwrap_or_default()
    }

    /// The database name (the role's name when not given, as in libpq).
    pub fn database(&self) -> &str {
        self.pg.get_dbname().unwrap_or_else(|| self.role())
    }

    /// The settings in libpq's key=value form, without the password: what `check-config` prints
    /// and what messages show.
    pub fn redacted(&self) -> String {
        fn quote(v: &str) -> String {
            format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
        }
        let c = &self.pg;
        let hosts: Vec<String> = c.get_hosts().iter().map(|h| host_name(Some(h))).collect();
        let ports: Vec<String> = c.get_ports().iter().map(u16::to_string).collect();
        let mut parts = Vec::new();
        let mut add = |key: &str, value: Option<String>| {
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                parts.push(format!("{key}={}", quote(&v)));
            }
        };
        add("host", Some(hosts.join(",")));
        add("port", Some(ports.join(",")));
        add("user", c.get_user().map(str::to_string));
        add("dbname", c.get_dbname().map(str::to_string));
        add("options", c.get_options().map(str::to_string));
        add(
            "application_name",
            c.get_application_name().map(str::to_string),
        );
        add(
            "connect_timeout",
            c.get_connect_timeout().map(|t| t.as_secs().to_string()),
        );
        add("sslmode", Some(self.tls.mode.name().to_string()));
        add(
            "sslrootcert",
            self.tls.root_cert.as_ref().map(|r| match r {
                RootCert::Pem(p) => p.describe(),
                RootCert::System => "system".into(),
            }),
        );
        if let Some((cert, key)) = &self.tls.client {
            add("sslcert", Some(cert.describe()));
            add("sslkey", Some(key.describe()));
        }
        parts.join(" ")
    }
}

fn host_name(h: Option<&Host>) -> String {
    match h {
        Some(Host::Tcp(name)) => name.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    }
}

/// libpq's environment defaults, for what the connection string left out.
fn apply_env(pg: &mut tokio_postgres::Config, env: &dyn Environment) -> Result<(), ConnectError> {
    if pg.get_hosts().is_empty() {
        let hosts = env.var("PGHOST").unwrap_or_else(|| "localhost".into());
        for h in hosts.split(',') {
            if h.starts_with('/') {
                pg.host_path(h);
            } else {
                pg.host(h);
            }
        }
    }
    if pg.get_ports().is_empty() {
        let port = env.var("PGPORT").unwrap_or_else(|| "5432".into());
        for p in port.split(',') {
            pg.port(p.trim().parse().map_err(|_| {
                ConnectError::Config(format!("PGPORT {port:?} is not a port number"))
            })?);
        }
    }
    if pg.get_user().is_none() {
        let user = env.var("PGUSER").or_else(os_user).ok_or_else(|| {
            ConnectError::Config("no role given (in the URL, as user=, or PGUSER)".into())
        })?;
        pg.user(user);
    }
    if pg.get_dbname().is_none() {
        if let Some(db) = env.var("PGDATABASE") {
            pg.dbname(db);
        }
    }
    if pg.get_options().is_none() {
        if let Some(o) = env.var("PGOPTIONS") {
            pg.options(o);
        }
    }
    if pg.get_application_name().is_none() {
        if let Some(a) = env.var("PGAPPNAME") {
            pg.application_name(a);
        }
    }
    if pg.get_connect_timeout().is_none() {
        if let Some(t) = env.var("PGCONNECT_TIMEOUT") {
            let secs: u64 = t.trim().parse().map_err(|_| {
                ConnectError::Config(format!(
                    "PGCONNECT_TIMEOUT {t:?} is not a number of seconds"
                ))
            })?;
            pg.connect_timeout(Duration::from_secs(secs));
        }
    }
    Ok(())
}

/// The name of the OS user this process runs as: libpq's default role.
fn os_user() -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: the pointers are valid for the call; getpwuid_r writes only into `pwd` and `buf`.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            libc::getuid(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        );
        if rc != 0 || found.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr(pwd.pw_name)
            .to_str()
            .ok()
            .map(str::to_string)
    }
}

fn tls_options(params: &Params, env: &dyn Environment) -> Result<TlsOptions, ConnectError> {
    let mode = SslMode::parse(params.sslmode.as_deref().unwrap_or("prefer"))?;
    let dot = env.home().map(|h| h.join(".postgresql"));
    let default = |name: &str| dot.as_ref().map(|d| d.join(name)).filter(|p| p.exists());
    let root_cert = match params.sslrootcert.as_deref() {
        Some("system") => Some(RootCert::System),
        Some(path) => Some(RootCert::Pem(Pem::File(PathBuf::from(path)))),
        None => default("root.crt").map(|p| RootCert::Pem(Pem::File(p))),
    };
    if root_cert == Some(RootCert::System) && mode != SslMode::VerifyFull {
        // As libpq 16: the system's roots vouch for any public name, so only a name check helps.
        return Err(ConnectError::Config(format!(
            "sslrootcert=system needs sslmode=verify-full (sslmode is {})",
            mode.name()
        )));
    }
    if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && root_cert.is_none() {
        return Err(ConnectError::Config(format!(
            "sslmode={} checks the server's certificate, but no root certificate is given: set \
             sslrootcert to the CA's PEM file (or `system` for the operating system's roots), or \
             put it at ~/.postgresql/root.crt",
            mode.name()
        )));
    }
    let cert = params
        .sslcert
        .as_deref()
        .map(PathBuf::from)
        .or_else(|| default("postgresql.crt"));
    let key = params
        .sslkey
        .as_deref()
        .map(PathBuf::from)
        .or_else(|| default("postgresql.key"));
    let client = match (cert, key) {
        (Some(c), Some(k)) => Some((Pem::File(c), Pem::File(k))),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConnectError::Config(
                "sslcert is set but sslkey is not: give both".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(ConnectError::Config(
                "sslkey is set but sslcert is not: give both".into(),
            ))
        }
    };
    Ok(TlsOptions {
        mode,
        root_cert,
        client,
    })
}

/// The password for this target from the password file, as libpq looks it up: the first line whose
/// host, port, database and user fields match (`*` matches anything). A file that others may read
/// is ignored, with a warning, as libpq does.
fn pgpass(pg: &tokio_postgres::Config, params: &Params, env: &dyn Environment) -> Option<String> {
    let path = match &params.passfile {
        Some(p) => PathBuf::from(p),
        None => env.home()?.join(".pgpass"),
    };
    let meta = std::fs::metadata(&path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                "password file has group or world access; permissions should be u=rw (0600) or less: ignored"
            );
            return None;
        }
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let host = match pg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        // libpq matches socket connections against "localhost".
        _ => "localhost".into(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432).to_string();
    let user = pg.get_user().unwrap_or_default();
    let db = pg.get_dbname().unwrap_or(user);
    let wanted = [host.as_str(), port.as_str(), db, user];
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(pgpass_fields)
        .find(|f| f.len() == 5 && (0..4).all(|i| f[i] == "*" || f[i] == wanted[i]))
        .map(|mut f| f.swap_remove(4))
}

/// The colon-separated fields of a `.pgpass` line; `\:` and `\\` are a literal colon and backslash.
fn pgpass_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut().expect("never empty").extend(chars.next()),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("never empty").push(c),
        }
    }
    fields
}

/// Takes the parameters of [`Params`] out of a connection string: returns the rest (for
/// tokio-postgres) and them.
fn split(conninfo: &str) -> Result<(String, Params), ConnectError> {
    let mut params = Params::default();
    let mut take = |key: &str, value: String| match params.slot(key) {
        Some(slot) => {
            *slot = Some(value);
            true
        }
        None => false,
    };
    let s = conninfo.trim();
    if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        let Some((base, query)) = s.split_once('?') else {
            return Ok((s.to_string(), params));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |x: &str| percent_decode_str(x).decode_utf8_lossy().into_owned();
            if !take(&decode(k), decode(v)) {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, params));
    }
    let mut kept = Vec::new();
    for (raw, key, value) in key_values(s)? {
        if !take(&key, value) {
            kept.push(raw);
        }
    }
    Ok((kept.join(" "), params))
}

/// libpq's key=value form as (the raw text of the pair, key, unquoted value).
fn key_values(s: &str) -> Result<Vec<(&str, String, String)>, ConnectError> {
    let bad = |why: &str| ConnectError::Config(format!("invalid connection string: {why}"));
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < bytes.len() && bytes[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i == bytes.len() {
            return Ok(out);
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = s[start..i].to_string();
        skip_ws(&mut i);
        if bytes.get(i) != Some(&b'=') {
            return Err(bad(&format!("{key:?} has no value (key=value)")));
        }
        i += 1;
        skip_ws(&mut i);
        let mut value = String::new();
        let quoted = bytes.get(i) == Some(&b'\'');
        if quoted {
            i += 1;
        }
        loop {
            let Some(c) = s[i..].chars().next() else {
                if quoted {
                    return Err(bad("unterminated quoted value"));
                }
                break;
            };
            if (quoted && c == '\'') || (!quoted && c.is_ascii_whitespace()) {
                i += usize::from(quoted);
                break;
            }
            i += c.len_utf8();
            if c == '\\' {
                if let Some(escaped) = s[i..].chars().next() {
                    value.push(escaped);
                    i += escaped.len_utf8();
                }
            } else {
                value.push(c);
            }
        }
        out.push((&s[start..i], key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&'static str, &'static str)]) -> BTreeMap<&'static str, &'static str> {
        let mut m: BTreeMap<_, _> = pairs.iter().copied().collect();
        m.entry("HOME").or_insert("/nonexistent");
        m
    }

    #[test]
    fn url_and_key_value_forms_give_the_same_target() {
        let url = "postgres://alice@db.example.com:6432/metrics?sslmode=verify-full&sslrootcert=%2Fca.pem&application_name=x";
        let kv = "host=db.example.com port=6432 user=alice dbname=metrics sslmode=verify-full sslrootcert='/ca.pem' application_name=x";
        let e = env(&[]);
        let a = Target::resolve(url, &Params::default(), None, &e).unwrap();
        let b = Target::resolve(kv, &Params::default(), None, &e).unwrap();
        assert_eq!(a.redacted(), b.redacted());
        assert_eq!(a.tls.mode, SslMode::VerifyFull);
        assert_eq!(
            a.tls.root_cert,
            Some(RootCert::Pem(Pem::File("/ca.pem".into())))
        );
        assert_eq!(a.address(), "db.example.com:6432");
        assert_eq!(a.pg.get_application_name(), Some("x"));
    }

    #[test]
    fn the_string_beats_settings_which_beat_the_environment() {
        let e = env(&[
            ("PGHOST", "envhost"),
            ("PGUSER", "envuser"),
            ("PGSSLMODE", "disable"),
            ("PGPASSWORD", "envpw"),
        ]);
        let settings = Params {
            sslmode: Some("require".into()),
            ..Params::default()
        };
        let t = Target::resolve("dbname=d", &settings, None, &e).unwrap();
        assert_eq!(t.address(), "envhost:5432");
        assert_eq!(t.role(), "envuser");
        assert_eq!(t.tls.mode, SslMode::Require);
        assert_eq!(t.pg.get_password(), Some(&b"envpw"[..]));
        let t =
            Target::resolve("sslmode=allow password=mine", &settings, Some("file"), &e).unwrap();
        assert_eq!(t.tls.mode, SslMode::Allow);
        assert_eq!(
            t.pg.get_password(),
            Some(&b"file"[..]),
            "a password file wins"
        );
        let t = Target::resolve("", &Params::default(), None, &env(&[])).unwrap();
        let me = os_user().unwrap();
        assert_eq!(
            (t.address(), t.role(), t.database()),
            ("localhost:5432".into(), me.as_str(), me.as_str())
        );
        assert_eq!(t.tls.mode, SslMode::Prefer, "libpq's default");
    }

    #[test]
    fn bad_values_are_named() {
        let e = env(&[("USER", "u")]);
        let err = |s: &str| {
            Target::resolve(s, &Params::default(), None, &e)
                .unwrap_err()
                .to_string()
        };
        assert!(err("sslmode=sometimes").contains("\"sometimes\" is not one of disable, allow"));
        assert!(err("sslmode=verify-ca").contains("no root certificate is given"));
        assert!(err("sslrootcert=system sslmode=require").contains("needs sslmode=verify-full"));
        assert!(err("sslcert=/c.pem").contains("sslkey is not"));
        assert!(err("host='unterminated").contains("unterminated"));
        assert!(err("host").contains("has no value"));
    }

    #[test]
    fn quoted_values_keep_spaces_quotes_and_backslashes() {
        let (rest, p) = split(r"sslkey='/a b/it\'s\\k' host=h  password = 'p w'").unwrap();
        assert_eq!(p.sslkey.as_deref(), Some(r"/a b/it's\k"));
        assert_eq!(rest, "host=h password = 'p w'");
        let pg: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(pg.get_password(), Some(&b"p w"[..]));
    }

    #[test]
    fn pgpass_lines_match_like_libpq() {
        assert_eq!(
            pgpass_fields(r"h:5432:d:u:p\:w\\x:y"),
            ["h", "5432", "d", "u", r"p:w\x:y"]
        );
        let dir = std::env::temp_dir().join(format!("pgconn-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pass");
        std::fs::write(
            &file,
            "# comment\nother:*:*:*:no\ndb.example.com:6432:*:alice:first\n*:*:*:alice:second\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let passfile = file.display().to_string();
        let e = env(&[]);
        let settings = Params {
            passfile: Some(passfile.clone()),
            ..Params::default()
        };
        let pw = |s: &str| {
            Target::resolve(s, &settings, None, &e)
                .unwrap()
                .pg
                .get_password()
                .map(|p| String::from_utf8(p.to_vec()).unwrap())
        };
        assert_eq!(
            pw("postgres://alice@db.example.com:6432/x").as_deref(),
            Some("first")
        );
        assert_eq!(
            pw("postgres://alice@elsewhere/x").as_deref(),
            Some("second")
        );
        assert_eq!(pw("postgres://bob@elsewhere/x"), None);
        assert_eq!(
            pw("postgres://alice:given@elsewhere/x").as_deref(),
            Some("given")
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            pw("postgres://alice@elsewhere/x"),
            None,
            "world-readable: ignored"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
