use super::*;
use std::collections::HashMap;

/// An environment of `pairs`, with a `HOME` (where the default data
/// directory goes) unless `pairs` sets one.
fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let mut map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    map.entry("HOME".into())
        .or_insert_with(|| "/home/test".into());
    move |k| map.get(k).cloned()
}

#[test]
fn the_example_config_parses_to_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cohort.example.toml");
    let c = Config::load(Some(&path), env(&[])).unwrap();
    let d = Config::default();
    assert_eq!(c.listen, d.listen);
    assert_eq!(c.plugins.cpu_ms, d.plugins.cpu_ms);
    assert_eq!(c.plugins.memory_mb, d.plugins.memory_mb);
    assert_eq!(c.plugins.max_upload_mb, d.plugins.max_upload_mb);
    assert!(c.http.trusted_proxies.is_empty());
    let (r, dr) = (&c.sign_in.rate_limit, &d.sign_in.rate_limit);
    assert_eq!(r.per_address_per_minute, dr.per_address_per_minute);
    assert_eq!(r.per_identifier_per_minute, dr.per_identifier_per_minute);
    assert_eq!(r.max_tracked, dr.max_tracked);
    let c = Config::load(
        None,
        env(&[
            ("COHORT_PLUGINS_DIR", "/p"),
            ("COHORT_PLUGIN_CACHE_DIR", "/c"),
        ]),
    )
    .unwrap();
    assert_eq!(c.plugins.directory.as_deref(), Some(Path::new("/p")));
    assert_eq!(c.plugins.cache_dir.as_deref(), Some(Path::new("/c")));
}

#[test]
fn defaults_are_loopback_and_local_data() {
    let c = Config::load(None, env(&[("HOME", "/home/ada")])).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.data_dir, PathBuf::from("/home/ada/.local/share/cohort"));
    assert!(c.bootstrap_admin_key.is_none());
}

#[test]
fn the_default_data_directory_does_not_depend_on_the_working_directory() {
    let dir = |vars: &[(&str, &str)]| Config::load(None, env(vars)).map(|c| c.data_dir);
    assert_eq!(
        dir(&[("HOME", "/home/ada"), ("XDG_DATA_HOME", "/data/ada")]).unwrap(),
        PathBuf::from("/data/ada/cohort")
    );
    // A relative XDG_DATA_HOME is ignored, as the specification says.
    assert_eq!(
        dir(&[("HOME", "/home/ada"), ("XDG_DATA_HOME", "rel")]).unwrap(),
        PathBuf::from("/home/ada/.local/share/cohort")
    );
    // systemd's StateDirectory= wins over the user's directories.
    assert_eq!(
        dir(&[("HOME", "/root"), ("STATE_DIRECTORY", "/var/lib/cohort")]).unwrap(),
        PathBuf::from("/var/lib/cohort")
    );
    assert_eq!(
        dir(&[("HOME", "/root"), ("COHORT_DATA_DIR", "/srv/c")]).unwrap(),
        PathBuf::from("/srv/c")
    );
    // Nothing to go by: an error naming the setting, not "./data".
    let err = dir(&[("HOME", "relative")]).unwrap_err().to_string();
    assert!(err.contains("COHORT_DATA_DIR"), "{err}");
}

#[test]
fn environment_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cohort.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:9000\"\ndata_dir = \"/srv/cohort\"\n[log]\nformat = \"json\"\n",
    )
    .unwrap();
    let c = Config::load(Some(&path), env(&[(ENV_LISTEN, "127.0.0.1:9100")])).unwrap();
    assert_eq!(c.listen.port(), 9100);
    assert_eq!(c.data_dir, PathBuf::from("/srv/cohort"));
    assert_eq!(c.log.format, LogFormat::Json);
}

#[test]
fn unknown_keys_and_bad_values_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cohort.toml");
    std::fs::write(&path, "listne = \"127.0.0.1:9000\"\n").unwrap();
    let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
    assert!(err.contains("listne"), "{err}");
    let err = Config::load(None, env(&[(ENV_LISTEN, "nowhere")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains(ENV_LISTEN), "{err}");
}

#[test]
fn trusted_proxies_are_cidr_blocks_or_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cohort.toml");
    std::fs::write(
        &path,
        "[http]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"2001:db8::/32\"]\n",
    )
    .unwrap();
    let c = Config::load(Some(&path), env(&[])).unwrap();
    let nets: Vec<String> = c
        .http
        .trusted_proxies
        .iter()
        .map(|p| p.0.to_string())
        .collect();
    assert_eq!(nets, ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]);
    std::fs::write(&path, "[http]\ntrusted_proxies = [\"10.0.0.0/33\"]\n").unwrap();
    let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
    assert!(err.contains("10.0.0.0/33"), "{err}");
    let c = Config::load(None, env(&[(ENV_TRUSTED_PROXIES, "127.0.0.1, ::1")])).unwrap();
    assert_eq!(c.http.trusted_proxies.len(), 2);
    let err = Config::load(None, env(&[(ENV_TRUSTED_PROXIES, "proxy.local")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(ENV_TRUSTED_PROXIES) && err.contains("proxy.local"),
        "{err}"
    );
}

#[test]
fn connection_limits_come_from_the_file_then_the_environment() {
    let c = Config::load(None, env(&[])).unwrap();
    assert_eq!(
        (
            c.http.header_timeout_ms,
            c.http.body_timeout_ms,
            c.http.idle_timeout_ms,
            c.http.max_connections
        ),
        (10_000, 30_000, 60_000, 0)
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cohort.toml");
    std::fs::write(
        &path,
        "[http]\nheader_timeout_ms = 2000\nbody_timeout_ms = 5000\nidle_timeout_ms = 7000\nmax_connections = 300\n",
    )
    .unwrap();
    let c = Config::load(
        Some(&path),
        env(&[
            (ENV_HTTP_MAX_CONNECTIONS, "64"),
            (ENV_HTTP_IDLE_TIMEOUT_MS, "3000"),
        ]),
    )
    .unwrap();
    assert_eq!(
        (
            c.http.header_timeout_ms,
            c.http.body_timeout_ms,
            c.http.idle_timeout_ms,
            c.http.max_connections
        ),
        (2000, 5000, 3000, 64)
    );
    let err = Config::load(None, env(&[(ENV_HTTP_HEADER_TIMEOUT_MS, "soon")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains(ENV_HTTP_HEADER_TIMEOUT_MS), "{err}");
    let err = Config::load(None, env(&[(ENV_HTTP_BODY_TIMEOUT_MS, "0")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("http.body_timeout_ms"), "{err}");
    let c = Config::load(None, env(&[])).unwrap();
    assert_eq!(
        (c.http.max_connections_per_peer, c.http.shutdown_timeout_ms),
        (0, 25_000)
    );
    std::fs::write(
        &path,
        "[http]\nmax_connections_per_peer = 50\nshutdown_timeout_ms = 9000\n",
    )
    .unwrap();
    let c = Config::load(
        Some(&path),
        env(&[(ENV_HTTP_MAX_CONNECTIONS_PER_PEER, "20")]),
    )
    .unwrap();
    assert_eq!(
        (c.http.max_connections_per_peer, c.http.shutdown_timeout_ms),
        (20, 9000)
    );
    let err = Config::load(None, env(&[(ENV_HTTP_SHUTDOWN_TIMEOUT_MS, "0")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("http.shutdown_timeout_ms"), "{err}");
}

#[test]
fn outbound_exceptions_come_from_the_file_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cohort.toml");
    std::fs::write(
        &path,
        "[outbound]\nallow_private = [\"10.0.0.0/8\", \"idp.internal.example\"]\n",
    )
    .unwrap();
    let c = Config::load(Some(&path), env(&[])).unwrap();
    assert_eq!(c.outbound.allow_private.len(), 2);
    assert!(
        c.outbound
            .policy()
            .check("x", "10.2.3.4".parse().unwrap())
            .is_ok()
    );
    assert!(
        Config::load(None, env(&[]))
            .unwrap()
            .outbound
            .policy()
            .check("x", "10.2.3.4".parse().unwrap())
            .is_err()
    );
    let c = Config::load(Some(&path), env(&[(ENV_OUTBOUND_ALLOW_PRIVATE, "")])).unwrap();
    assert!(c.outbound.allow_private.is_empty());
    let err = Config::load(
        None,
        env(&[(ENV_OUTBOUND_ALLOW_PRIVATE, "127.0.0.1, bad host")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(ENV_OUTBOUND_ALLOW_PRIVATE) && err.contains("bad host"),
        "{err}"
    );
}

#[test]
fn secrets_do_not_print() {
    let c = Config::load(
        None,
        env(&[(ENV_BOOTSTRAP_ADMIN_KEY, "super-secret-value")]),
    )
    .unwrap();
    assert!(!format!("{c:?}").contains("super-secret-value"));
}

#[test]
fn the_schedule_tick_comes_from_the_file_then_the_environment() {
    assert_eq!(
        Config::load(None, env(&[])).unwrap().schedules.tick_ms,
        5_000
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cohort.toml");
    std::fs::write(&path, "[schedules]\ntick_ms = 250\n").unwrap();
    assert_eq!(
        Config::load(Some(&path), env(&[]))
            .unwrap()
            .schedules
            .tick_ms,
        250
    );
    let c = Config::load(Some(&path), env(&[(ENV_SCHEDULE_TICK_MS, "100")])).unwrap();
    assert_eq!(c.schedules.tick_ms, 100);
    let err = Config::load(None, env(&[(ENV_SCHEDULE_TICK_MS, "0")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("schedules.tick_ms"), "{err}");
}
