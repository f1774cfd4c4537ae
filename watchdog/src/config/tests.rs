//! The configuration's parsing, defaults and the errors a user sees.

use super::*;

fn parse(name: &str, text: &str) -> Result<Config, ConfigError> {
    Config::from_text(Path::new(name), text)
}

#[test]
fn embedded_default_file_matches_default() {
    assert_eq!(
        parse("default.toml", DEFAULT_CONFIG).unwrap(),
        Config::default()
    );
}

#[test]
fn default_serves_on_localhost() {
    let config = Config::default();
    assert_eq!(config.listen, "127.0.0.1:9477".parse().unwrap());
    assert_eq!(config.namespaces, Namespaces::Own);
    assert!(config.probes.kfree_skb);
    assert_eq!(config.poll_interval, Duration::from_millis(500));
}

#[test]
fn toml_and_yaml_override_single_keys() {
    let toml = parse(
        "a.toml",
        "namespaces = \"all\"\n[probes]\nkfree_skb = false\n",
    )
    .unwrap();
    assert_eq!(toml.namespaces, Namespaces::All);
    assert!(!toml.probes.kfree_skb);
    assert_eq!(toml.listen, Config::default().listen);
    let yaml = parse("a.yaml", "listen: 0.0.0.0:9000\npoll_interval: 250ms\n").unwrap();
    assert_eq!(yaml.listen, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(yaml.poll_interval, Duration::from_millis(250));
    assert_eq!(parse("empty.yml", "").unwrap(), Config::default());
}

#[test]
fn limits_bound_what_a_file_can_ask_for() {
    // 100 000 levels of YAML nesting: refused before the parser recurses.
    let deep = format!(
        "peers:\n  interfaces: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let start = std::time::Instant::now();
    let err = parse("deep.yaml", &deep).unwrap_err().to_string();
    assert!(
        err.contains("nests 100000 levels deep; at most 32"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    // Too many interface names.
    let names: Vec<String> = (0..=MAX_INTERFACES).map(|i| format!("\"e{i}\"")).collect();
    let err = parse(
        "many.toml",
        &format!("[peers]\ninterfaces = [{}]\n", names.join(",")),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("lists 257 interfaces; at most 256"), "{err}");
    // Names no interface can have.
    for (bad, why) in [
        ("", "is empty"),
        ("a b", "whitespace"),
        ("../../etc", "`/`"),
        ("..", "`.` or `..`"),
        ("abcdefghijklmnop", "longer than 15 bytes"),
    ] {
        let err = parse(
            "bad.toml",
            &format!("[peers]\ninterfaces = [\"eth0\", {bad:?}]\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`peers.interfaces` names") && err.contains(why),
            "{bad:?}: {err}"
        );
    }
    let ok = parse(
        "ok.toml",
        "[peers]\ninterfaces = [\"flannel.1\", \"tailscale0\"]\n",
    );
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn refused_files_are_named_with_the_reason() {
    let err = Config::load(Some(Path::new("/dev/zero")))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "config file /dev/zero is a character device, not a regular file; point \
         --config at a TOML or YAML file"
    );
}

#[test]
fn unknown_field_is_named_with_the_allowed_ones() {
    let err = parse("a.toml", "listn = \"127.0.0.1:1\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `listn`"), "{err}");
    assert!(err.contains("`listen`"), "{err}");
    let err = parse("a.yaml", "probes:\n  kfree: true\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `kfree`"), "{err}");
    assert!(err.contains("kfree_skb"), "{err}");
}

#[test]
fn bad_values_name_the_field() {
    let err = parse("a.toml", "listen = \"localhost\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("listen"), "{err}");
    assert!(err.contains("socket address"), "{err}");
    let err = parse("a.toml", "namespaces = \"some\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`own`") && err.contains("`node`") && err.contains("`all`"),
        "{err}"
    );
    assert_eq!(
        parse("a.toml", "namespaces = \"node\"\n")
            .unwrap()
            .namespaces,
        Namespaces::Node
    );
    let err = parse("a.toml", "[pods]\nsource = \"file\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("pods.path"), "{err}");
    let err = parse("a.toml", "[pods]\nendpoints = \"kubernetes\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pods.endpoints") && err.contains("pods.source"),
        "{err}"
    );
    let err = parse(
        "a.toml",
        "[pods]\nsource = \"kubernetes\"\nendpoints = \"file\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("pods.endpoints_path"), "{err}");
    let err = parse("a.toml", "poll_interval = \"10ms\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`poll_interval`") && err.contains("100ms"),
        "{err}"
    );
    let err = parse("a.json", "{}").unwrap_err().to_string();
    assert!(err.contains("*.toml"), "{err}");
}

#[test]
fn runbook_base_url_defaults_to_the_repository_and_must_be_a_url() {
    let default = Config::default().alerts.runbook_base();
    assert_eq!(
        default,
        concat!(env!("CARGO_PKG_REPOSITORY"), "/blob/main/docs/runbooks/")
    );
    let config = parse(
        "a.toml",
        "[alerts]\nrunbook_base_url = \"https://wiki.example/runbooks\"\n",
    )
    .unwrap();
    assert_eq!(
        config.alerts.runbook_base(),
        "https://wiki.example/runbooks/"
    );
    let err = parse("a.toml", "[alerts]\nrunbook_base_url = \"docs/runbooks\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("alerts.runbook_base_url: `docs/…` is not an http(s) URL"),
        "{err}"
    );
}

#[test]
fn alert_sinks_parse_and_errors_name_the_field() {
    let config = parse(
        "a.toml",
        "[alerts]\nrepeat_interval = \"10m\"\n[[alerts.sinks]]\nname = \"am\"\n\
         type = \"alertmanager\"\nurl = \"http://127.0.0.1:9093\"\n\
         [[alerts.sinks]]\nname = \"hook\"\ntype = \"webhook\"\nurl_env = \"HOOK_URL\"\n\
         secret_file = \"/etc/watchdog/hmac\"\nqueue = 8\n",
    )
    .unwrap();
    assert_eq!(config.alerts.sinks.len(), 2);
    assert_eq!(config.alerts.sinks[1].queue, 8);
    assert_eq!(config.alerts.repeat_interval, Duration::from_secs(600));
    let err = parse(
        "a.toml",
        "[[alerts.sinks]]\nname = \"x\"\ntype = \"webhook\"\nurl = \"htp://x\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("alerts.sinks[0].url: `htp://x` is not an http(s) URL"),
        "{err}"
    );
    let err = parse(
        "a.toml",
        "[[alerts.sinks]]\nname = \"x\"\ntype = \"pager\"\nurl = \"http://x\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`webhook`") && err.contains("`slack`"),
        "{err}"
    );
}

#[test]
fn desired_section_parses_and_errors_name_the_key() {
    let config = parse(
        "a.yaml",
        "desired:\n  source: kubernetes\n  stale_after: 2m\n  grace: 5s\n",
    )
    .unwrap();
    assert_eq!(config.desired.source, desired::Source::Kubernetes);
    assert_eq!(config.desired.stale_after, Duration::from_secs(120));
    let err = parse("a.toml", "[desired]\nsource = \"file\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("config file a.toml: `desired.path` is empty"),
        "{err}"
    );
    let err = parse("a.toml", "[desired]\nsorce = \"file\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown field `sorce`") && err.contains("`source`"),
        "{err}"
    );
}

#[test]
fn empty_btf_path_means_none() {
    let config = parse("a.toml", "btf_path = \"\"\n").unwrap();
    assert_eq!(config.btf_path(), None);
    assert!(Config::default().btf_path().is_some());
}

#[test]
fn yaml_errors_name_the_key_and_the_line() {
    let err = parse("a.yaml", "listen: 0.0.0.0:9000\nprobes:\n  kfree: true\n")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "config file a.yaml: line 3 column 3 (`kfree: true`): unknown field `kfree`, expected \
         one of `kfree_skb`, `peers`, `tcp`"
    );
    let err = parse("a.yaml", "namespaces: mine\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with(
            "(`namespaces: mine`): unknown variant `mine`, expected one of `own`, `node`, `all`"
        ),
        "{err}"
    );
    let err = parse("a.yaml", "poll_interval: [1s\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("config file a.yaml: line 1 column "),
        "{err}"
    );
}
