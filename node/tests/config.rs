//! The node configuration file: the examples in docs/examples load, every class of mistake is
//! reported with the key that holds it, and no file content makes the parser panic.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use replicast_node::config::{
    ClusterLayout, ConfigError, FanoutStrategy, LinkTuning, LogLevel, MulticastInterface,
    NodeConfig, PeerLimits, Role, RoleConfig,
};
use replicast_node::driver::link_config;
use replicast_node::engine::EngineOptions;
use replicast_transport::quic::Congestion;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples")
}

fn example(name: &str) -> PathBuf {
    examples_dir().join(name)
}

fn example_text(name: &str) -> String {
    std::fs::read_to_string(example(name)).expect("examples are readable")
}

const ORIGIN: &str = "/etc/replicast/node.toml";

const STORAGE: &str = r#"
[node]
name = "s1"
role = "storage"
listen = "127.0.0.1:7101"

[tls]
ca = "ca.pem"
cert = "s1.pem"
key = "s1.key"

[master]
address = "127.0.0.1:7000"
name = "master"

[storage]
path = "s1.redb"

[multicast]
group = "239.1.2.3:7200"
interface = "lo"
"#;

const MASTER: &str = r#"
[node]
name = "master"
role = "master"
listen = "127.0.0.1:7000"

[tls]
ca = "ca.pem"
cert = "master.pem"
key = "master.key"

[cluster]
partitions = 12
replicas = 2
"#;

const CLIENT: &str = r#"
[node]
name = "c1"
role = "client"
listen = "127.0.0.1:0"

[tls]
ca = "ca.pem"
cert = "c1.pem"
key = "c1.key"

[master]
address = "127.0.0.1:7000"
name = "master"
"#;

/// `base` with `from` replaced by `to`, which must change it.
fn edit(base: &str, from: &str, to: &str) -> String {
    assert!(base.contains(from), "{from:?} is not in the base config");
    base.replacen(from, to, 1)
}

/// The error of parsing `text`, which must fail.
fn error_of(text: &str) -> ConfigError {
    match NodeConfig::parse(text, ORIGIN) {
        Ok(config) => panic!("accepted a config with a mistake: {config:?}"),
        Err(error) => error,
    }
}

/// Asserts that `error` names `key`, and that its message names the file and the key.
fn assert_names(error: &ConfigError, key: &str) {
    assert_eq!(error.key(), Some(key), "wrong key in: {error}");
    let message = error.to_string();
    assert!(
        message.starts_with(ORIGIN),
        "message does not name the file: {message}"
    );
    assert!(
        message.contains(key),
        "message does not name `{key}`: {message}"
    );
}

fn invalid(text: &str, key: &str) -> ConfigError {
    let error = error_of(text);
    assert!(
        matches!(error, ConfigError::Invalid { .. }),
        "not Invalid: {error:?}"
    );
    assert_names(&error, key);
    error
}

#[test]
fn every_example_loads() {
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(examples_dir()).expect("docs/examples exists") {
        let path = entry.expect("directory entry").path();
        if path
            .extension()
            .is_some_and(|extension| extension == "toml")
        {
            let config = NodeConfig::load(&path).unwrap_or_else(|error| panic!("{error}"));
            seen.push(config.role());
        }
    }
    for role in [Role::Master, Role::Storage, Role::Client, Role::Admin] {
        assert!(seen.contains(&role), "no example for a {role} node");
    }
}

#[test]
fn admin_example_names_its_masters() {
    let config = NodeConfig::load(example("admin.toml")).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.role(), Role::Admin);
    // Every master of the group: status and admin find the primary among them.
    let masters: Vec<&str> = config
        .masters
        .iter()
        .map(|master| master.name.as_str())
        .collect();
    assert_eq!(masters, ["master-1", "master-2", "master-3"]);
    assert_eq!(config.tls.cert, examples_dir().join("certs/admin.pem"));
    // An admin asks; it holds no data and sends no stores.
    let text = std::fs::read_to_string(example("admin.toml")).expect("read the example");
    for (section, key) in [
        ("[storage]\npath = \"x.redb\"\n", "storage"),
        ("[fanout]\nstrategy = \"unicast\"\n", "fanout"),
    ] {
        let error = NodeConfig::parse(&format!("{text}\n{section}"), "admin.toml")
            .expect_err("an admin section is refused");
        assert_eq!(error.key(), Some(key), "{error}");
    }
}

#[test]
fn master_example() {
    let config = NodeConfig::load(example("master.toml")).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.node.name.as_str(), "master-1");
    let masters: Vec<(&str, SocketAddr)> = config
        .masters
        .iter()
        .map(|master| (master.name.as_str(), master.address))
        .collect();
    assert_eq!(
        masters,
        [
            ("master-1", "127.0.0.1:7000".parse().unwrap()),
            ("master-2", "127.0.0.1:7001".parse().unwrap()),
            ("master-3", "127.0.0.1:7002".parse().unwrap()),
        ]
    );
    let settings = config
        .master_settings
        .as_ref()
        .expect("a master's settings");
    assert_eq!(settings.path, examples_dir().join("data/master-1-log.redb"));
    assert_eq!(settings.tick, Duration::from_millis(50));
    assert_eq!((settings.election_ticks, settings.heartbeat_ticks), (10, 2));
    assert_eq!(
        config.node.listen,
        "127.0.0.1:7000".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(config.tls.ca, examples_dir().join("certs/ca.pem"));
    assert_eq!(
        config.role,
        RoleConfig::Master {
            cluster: ClusterLayout {
                partitions: 12,
                replicas: 2
            }
        }
    );
    assert_eq!(config.master(), None);
    assert_eq!(config.multicast, None);
    assert_eq!(config.link, LinkTuning::default());
    assert_eq!(config.log, LogLevel::Info);
}

#[test]
fn storage_example() {
    let config =
        NodeConfig::load(example("storage.toml")).unwrap_or_else(|error| panic!("{error}"));
    let RoleConfig::Storage { master, storage } = &config.role else {
        panic!("not a storage: {config:?}");
    };
    assert_eq!(
        master.address,
        "127.0.0.1:7000".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(master.name.as_str(), "master-1", "the first of [masters]");
    assert_eq!(config.masters.len(), 3);
    assert_eq!(storage.path, examples_dir().join("data/storage-1.redb"));
    assert_eq!(config.tls.key, examples_dir().join("certs/storage-1.key"));
    let multicast = config
        .multicast
        .as_ref()
        .expect("the storage example joins a group");
    assert_eq!(
        multicast.group,
        "239.255.42.1:7200".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        multicast.interface,
        MulticastInterface::Address(Ipv4Addr::LOCALHOST)
    );
    assert_eq!((multicast.ttl, multicast.loopback), (1, true));
}

#[test]
fn client_example() {
    let config = NodeConfig::load(example("client.toml")).unwrap_or_else(|error| panic!("{error}"));
    let RoleConfig::Client { master, fanout } = &config.role else {
        panic!("not a client: {config:?}");
    };
    assert_eq!(*fanout, FanoutStrategy::Auto);
    assert_eq!(master.name.as_str(), "master-1");
    assert_eq!(config.masters.len(), 3);
    assert_eq!(config.node.listen.port(), 0);
    assert!(config.multicast.is_some());
}

#[test]
fn site_b_storage_example_joins_no_group_and_keeps_absolute_paths() {
    let config =
        NodeConfig::load(example("storage-site-b.toml")).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.role(), Role::Storage);
    assert_eq!(config.multicast, None);
    assert_eq!(config.tls.ca, Path::new("/etc/replicast/ca.pem"));
    assert_eq!(config.link.idle_timeout, Duration::from_secs(60));
    assert_eq!(config.link.keep_alive, Some(Duration::from_secs(10)));
    assert_eq!(
        config.master().map(|master| master.address),
        Some("10.0.1.10:7000".parse().unwrap())
    );
}

#[test]
fn defaults_fill_optional_keys() {
    let config = NodeConfig::parse(CLIENT, ORIGIN).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.role(), Role::Client,);
    let RoleConfig::Client { fanout, .. } = config.role else {
        unreachable!()
    };
    assert_eq!(fanout, FanoutStrategy::Unicast);
    assert_eq!(config.link, LinkTuning::default());
    assert_eq!(config.log, LogLevel::Info);

    let config = NodeConfig::parse(
        &edit(
            STORAGE,
            "interface = \"lo\"\n",
            "interface = \"lo\"\nloopback = false\n",
        ),
        ORIGIN,
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let multicast = config.multicast.expect("storage joins");
    assert_eq!(multicast.ttl, 1);
    assert!(!multicast.loopback);
    assert_eq!(multicast.interface, MulticastInterface::Name("lo".into()));
}

#[test]
fn relative_paths_follow_the_file_and_absolute_ones_stay() {
    let text = edit(STORAGE, "ca = \"ca.pem\"", "ca = \"/srv/pki/ca.pem\"");
    let config = NodeConfig::parse(&text, "/etc/replicast/node.toml").unwrap();
    assert_eq!(config.tls.ca, Path::new("/srv/pki/ca.pem"));
    assert_eq!(config.tls.cert, Path::new("/etc/replicast/s1.pem"));
    let RoleConfig::Storage { storage, .. } = &config.role else {
        unreachable!()
    };
    assert_eq!(storage.path, Path::new("/etc/replicast/s1.redb"));
}

#[test]
fn link_tuning_is_read() {
    let text = format!(
        "{MASTER}\n[link]\nkeep_alive_ms = 0\nidle_timeout_ms = 120000\n\
         stream_receive_window = 1000\nsend_window = 2000\nmessage_copies = false\n\
         congestion = \"bbr\"\n[log]\nlevel = \"debug\"\n"
    );
    let config = NodeConfig::parse(&text, ORIGIN).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        config.link,
        LinkTuning {
            keep_alive: None,
            idle_timeout: Duration::from_secs(120),
            stream_receive_window: 1000,
            send_window: 2000,
            message_copies: false,
            congestion: Congestion::Bbr,
        }
    );
    assert_eq!(
        link_config(&config.link, &config.limits).congestion,
        Congestion::Bbr,
        "the links are made with the controller read"
    );
    let defaults = NodeConfig::parse(MASTER, ORIGIN).unwrap_or_else(|error| panic!("{error}"));
    assert!(
        defaults.link.message_copies,
        "copies are on unless turned off"
    );
    assert_eq!(defaults.link.congestion, Congestion::Cubic);
    assert_eq!(config.log, LogLevel::Debug);
}

#[test]
fn unknown_keys_are_named_with_their_section_and_place() {
    let error = error_of(&edit(STORAGE, "group =", "grup ="));
    assert!(matches!(error, ConfigError::UnknownKey { .. }), "{error:?}");
    assert_names(&error, "multicast.grup");
    // `grup` is on line 20, column 1 of STORAGE.
    assert_eq!(error.location().unwrap().position, Some((20, 1)), "{error}");

    let error = error_of(&format!("{STORAGE}\n[replication]\nbatch = 10\n"));
    assert!(matches!(error, ConfigError::UnknownKey { .. }), "{error:?}");
    assert_names(&error, "replication");

    let error = error_of(&format!("colour = \"blue\"\n{STORAGE}"));
    assert_names(&error, "colour");

    let error = error_of(&format!("{MASTER}\n[link]\nidle_timeout = 1000\n"));
    assert_names(&error, "link.idle_timeout");
    // A key after a section header belongs to that section: the error says where it landed.
    let error = error_of(&format!("{MASTER}keep_alive_ms = 1000\n"));
    assert_names(&error, "cluster.keep_alive_ms");

    // Inline tables and dotted keys are the same keys written another way.
    let error = error_of(&format!("link = {{ idle_timeout = 1000 }}\n{MASTER}"));
    assert_names(&error, "link.idle_timeout");
    let error = error_of(&edit(
        MASTER,
        "[cluster]\n",
        "[cluster]\nlayout.shards = 3\n",
    ));
    assert_names(&error, "cluster.layout");
}

#[test]
fn wrong_types_name_the_key() {
    for (text, key) in [
        (
            edit(MASTER, "partitions = 12", "partitions = \"12\""),
            "cluster.partitions",
        ),
        (
            edit(MASTER, "replicas = 2", "replicas = -2"),
            "cluster.replicas",
        ),
        (
            edit(
                STORAGE,
                "interface = \"lo\"",
                "interface = \"lo\"\nttl = 1.5",
            ),
            "multicast.ttl",
        ),
        (
            edit(
                STORAGE,
                "interface = \"lo\"",
                "interface = \"lo\"\nloopback = \"yes\"",
            ),
            "multicast.loopback",
        ),
        (edit(STORAGE, "name = \"s1\"", "name = 1"), "node.name"),
        (
            edit(STORAGE, "path = \"s1.redb\"", "path = [\"s1.redb\"]"),
            "storage.path",
        ),
        (
            edit(CLIENT, "[master]", "[fanout]\nstrategy = true\n[master]"),
            "fanout.strategy",
        ),
    ] {
        let error = error_of(&text);
        assert!(
            matches!(error, ConfigError::WrongType { .. }),
            "not WrongType: {error:?}"
        );
        assert_names(&error, key);
    }
}

#[test]
fn missing_keys_and_sections_are_named_for_the_role() {
    for (text, key) in [
        (edit(STORAGE, "name = \"s1\"\n", ""), "node.name"),
        (edit(STORAGE, "role = \"storage\"\n", ""), "node.role"),
        (
            edit(STORAGE, "listen = \"127.0.0.1:7101\"\n", ""),
            "node.listen",
        ),
        (edit(STORAGE, "key = \"s1.key\"\n", ""), "tls.key"),
        (edit(STORAGE, "path = \"s1.redb\"\n", ""), "storage.path"),
        (
            edit(STORAGE, "[storage]\npath = \"s1.redb\"\n", ""),
            "storage",
        ),
        (
            edit(STORAGE, "address = \"127.0.0.1:7000\"\n", ""),
            "master.address",
        ),
        (edit(CLIENT, "name = \"master\"\n", ""), "master.name"),
        (
            edit(
                CLIENT,
                "[master]\naddress = \"127.0.0.1:7000\"\nname = \"master\"\n",
                "",
            ),
            // Neither [masters] nor the single [master]: the group is named first.
            "masters",
        ),
        (
            edit(MASTER, "[cluster]\npartitions = 12\nreplicas = 2\n", ""),
            "cluster",
        ),
        (edit(MASTER, "replicas = 2\n", ""), "cluster.replicas"),
        (
            edit(STORAGE, "group = \"239.1.2.3:7200\"\n", ""),
            "multicast.group",
        ),
        (
            edit(STORAGE, "interface = \"lo\"\n", ""),
            "multicast.interface",
        ),
        (
            edit(
                MASTER,
                "[tls]\nca = \"ca.pem\"\ncert = \"master.pem\"\nkey = \"master.key\"\n",
                "",
            ),
            "tls",
        ),
        (
            format!("{CLIENT}[fanout]\nstrategy = \"multicast\"\n"),
            "multicast",
        ),
        (String::new(), "node"),
    ] {
        let error = error_of(&text);
        assert!(
            matches!(error, ConfigError::Missing { .. }),
            "not Missing: {error:?}"
        );
        assert_names(&error, key);
    }
}

#[test]
fn a_masters_own_master_section_holds_its_settings_not_a_peer() {
    let error = error_of(&format!(
        "{MASTER}[master]\naddress = \"127.0.0.1:7000\"\nname = \"master\"\n"
    ));
    assert_names(&error, "master.address");
    assert!(error.to_string().contains("[masters]"), "{error}");
    let error = error_of(&STORAGE.replace("[master]\n", "[master]\npath = \"x\"\n"));
    assert_names(&error, "master.path");
    let error = error_of(&format!("{MASTER}[master]\nelection_ticks = 1\n"));
    assert_names(&error, "master.election_ticks");
    let error = error_of(&format!("{MASTER}[masters]\nother = \"127.0.0.1:7001\"\n"));
    assert_names(&error, "masters");
}

#[test]
fn sections_of_other_roles_are_refused() {
    for (text, key) in [
        (
            format!("{STORAGE}[cluster]\npartitions = 3\nreplicas = 1\n"),
            "cluster",
        ),
        (format!("{CLIENT}[storage]\npath = \"x.redb\"\n"), "storage"),
        (
            format!("{MASTER}[multicast]\ngroup = \"239.1.2.3:7200\"\ninterface = \"lo\"\n"),
            "multicast",
        ),
        (
            format!("{STORAGE}[fanout]\nstrategy = \"auto\"\n"),
            "fanout",
        ),
    ] {
        let error = error_of(&text);
        assert!(
            matches!(error, ConfigError::NotForRole { .. }),
            "not NotForRole: {error:?}"
        );
        assert_names(&error, key);
    }
}

#[test]
fn multicast_groups_must_be_multicast_with_a_port() {
    let error = invalid(
        &edit(STORAGE, "239.1.2.3:7200", "10.0.0.1:7200"),
        "multicast.group",
    );
    assert!(error.to_string().contains("unicast"), "{error}");
    assert_eq!(error.location().unwrap().position, Some((20, 9)), "{error}");
    invalid(
        &edit(STORAGE, "239.1.2.3:7200", "239.1.2.3"),
        "multicast.group",
    );
    invalid(
        &edit(STORAGE, "239.1.2.3:7200", "224.0.0.5:7200"),
        "multicast.group",
    );
    invalid(
        &edit(STORAGE, "239.1.2.3:7200", "239.1.2.3:0"),
        "multicast.group",
    );
    invalid(
        &edit(STORAGE, "239.1.2.3:7200", "[2001:db8::1]:7200"),
        "multicast.group",
    );
    invalid(
        &edit(STORAGE, "239.1.2.3:7200", "group.example:7200"),
        "multicast.group",
    );

    let ipv6 = edit(STORAGE, "239.1.2.3:7200", "[ff15::1:2]:7200");
    let config = NodeConfig::parse(&ipv6, ORIGIN).unwrap_or_else(|error| panic!("{error}"));
    assert!(config.multicast.unwrap().group.is_ipv6());
}

#[test]
fn multicast_interface_and_ttl_are_checked() {
    let key = "multicast.interface";
    invalid(&edit(STORAGE, "\"lo\"", "\"::1\""), key);
    invalid(&edit(STORAGE, "\"lo\"", "\"239.1.1.1\""), key);
    invalid(
        &edit(STORAGE, "\"lo\"", "\"a-very-long-interface-name\""),
        key,
    );
    invalid(&edit(STORAGE, "\"lo\"", "\"\""), key);
    invalid(&edit(STORAGE, "\"lo\"", "\"eth 0\""), key);
    let ipv6 = edit(STORAGE, "239.1.2.3:7200", "[ff15::1:2]:7200");
    invalid(&edit(&ipv6, "\"lo\"", "\"127.0.0.1\""), key);

    for ttl in ["0", "256", "100000000000"] {
        let text = edit(
            STORAGE,
            "interface = \"lo\"",
            &format!("interface = \"lo\"\nttl = {ttl}"),
        );
        invalid(&text, "multicast.ttl");
    }
}

#[test]
fn a_multicast_rate_paces_the_sender_and_is_checked() {
    let with_rate = |rate: &str| {
        edit(
            STORAGE,
            "interface = \"lo\"",
            &format!("interface = \"lo\"\nrate_mbit = {rate}"),
        )
    };
    let config = NodeConfig::parse(&with_rate("100"), ORIGIN).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.multicast.and_then(|m| m.rate_mbit), Some(100));
    let config = NodeConfig::parse(STORAGE, ORIGIN).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.multicast.and_then(|m| m.rate_mbit), None, "unpaced");
    for rate in ["0", "100001"] {
        invalid(&with_rate(rate), "multicast.rate_mbit");
    }
    for rate in ["-5", "\"100Mbit\""] {
        let error = error_of(&with_rate(rate));
        assert!(matches!(error, ConfigError::WrongType { .. }), "{error:?}");
        assert_names(&error, "multicast.rate_mbit");
    }
}

#[test]
fn node_names_must_be_dns_labels() {
    let too_long = "a".repeat(64);
    for name in [
        "Storage-1",
        "s_1",
        "",
        "-s1",
        "s1-",
        "s1.example",
        too_long.as_str(),
        "stöрage",
    ] {
        invalid(
            &edit(STORAGE, "name = \"s1\"", &format!("name = {name:?}")),
            "node.name",
        );
    }
    invalid(
        &edit(STORAGE, "name = \"master\"", "name = \"Master\""),
        "master.name",
    );
    // A storage naming itself as its master: names tell peers apart.
    invalid(
        &edit(STORAGE, "name = \"master\"", "name = \"s1\""),
        "master.name",
    );
    let longest = "a".repeat(63);
    let text = edit(STORAGE, "name = \"s1\"", &format!("name = \"{longest}\""));
    assert!(NodeConfig::parse(&text, ORIGIN).is_ok());
}

#[test]
fn addresses_and_roles_are_checked() {
    invalid(
        &edit(STORAGE, "role = \"storage\"", "role = \"replica\""),
        "node.role",
    );
    invalid(&edit(STORAGE, "127.0.0.1:7101", "127.0.0.1"), "node.listen");
    invalid(
        &edit(STORAGE, "127.0.0.1:7101", "localhost:7101"),
        "node.listen",
    );
    invalid(
        &edit(STORAGE, "127.0.0.1:7101", "127.0.0.1:0"),
        "node.listen",
    );
    invalid(
        &edit(MASTER, "127.0.0.1:7000", "127.0.0.1:0"),
        "node.listen",
    );
    invalid(
        &edit(STORAGE, "127.0.0.1:7000", "0.0.0.0:7000"),
        "master.address",
    );
    invalid(
        &edit(STORAGE, "127.0.0.1:7000", "127.0.0.1:0"),
        "master.address",
    );
    invalid(
        &edit(STORAGE, "127.0.0.1:7000", "239.1.2.3:7000"),
        "master.address",
    );
    invalid(&edit(STORAGE, "\"s1.redb\"", "\"\""), "storage.path");
    invalid(&edit(STORAGE, "\"s1.redb\"", "\"data/\""), "storage.path");
    invalid(&edit(STORAGE, "\"s1.pem\"", "\"  \""), "tls.cert");
    invalid(
        &format!("{CLIENT}[fanout]\nstrategy = \"broadcast\"\n"),
        "fanout.strategy",
    );
    invalid(&format!("{MASTER}[log]\nlevel = \"loud\"\n"), "log.level");
}

#[test]
fn cluster_shape_is_bounded() {
    invalid(
        &edit(MASTER, "partitions = 12", "partitions = 0"),
        "cluster.partitions",
    );
    invalid(
        &edit(MASTER, "partitions = 12", "partitions = 65537"),
        "cluster.partitions",
    );
    invalid(
        &edit(MASTER, "replicas = 2", "replicas = 0"),
        "cluster.replicas",
    );
    let too_many = ClusterLayout::MAX_REPLICAS + 1;
    invalid(
        &edit(MASTER, "replicas = 2", &format!("replicas = {too_many}")),
        "cluster.replicas",
    );
    let text = edit(MASTER, "partitions = 12", "partitions = 65536");
    assert!(NodeConfig::parse(&text, ORIGIN).is_ok());
}

#[test]
fn link_tuning_is_bounded() {
    let link = |keys: &str| format!("{MASTER}[link]\n{keys}\n");
    invalid(&link("keep_alive_ms = 30000"), "link.keep_alive_ms");
    // Below the default keep-alive (250 ms): the key given is the one named.
    invalid(&link("idle_timeout_ms = 200"), "link.idle_timeout_ms");
    invalid(&link("idle_timeout_ms = 0"), "link.idle_timeout_ms");
    invalid(
        &link("keep_alive_ms = 1000\nidle_timeout_ms = 1000"),
        "link.keep_alive_ms",
    );
    invalid(&link("send_window = 0"), "link.send_window");
    let error = error_of(&link("message_copies = \"yes\""));
    assert!(matches!(error, ConfigError::WrongType { .. }), "{error:?}");
    assert_names(&error, "link.message_copies");
    invalid(&link("congestion = \"reno\""), "link.congestion");
    invalid(
        &link("stream_receive_window = 4611686018427387904"),
        "link.stream_receive_window",
    );
}

#[test]
fn bad_toml_is_a_syntax_error_with_its_place() {
    let error = error_of(&edit(STORAGE, "path = \"s1.redb\"", "path = \"s1.redb"));
    let ConfigError::Syntax { at, .. } = &error else {
        panic!("not Syntax: {error:?}")
    };
    assert_eq!(at.position.map(|(line, _)| line), Some(17), "{error}");
    assert!(
        error.to_string().starts_with(&format!("{ORIGIN}:17:")),
        "{error}"
    );

    let duplicate = edit(STORAGE, "name = \"s1\"", "name = \"s1\"\nname = \"s2\"");
    assert!(matches!(error_of(&duplicate), ConfigError::Syntax { .. }));
}

#[test]
fn load_reports_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.toml");
    let error = NodeConfig::load(&missing).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
    assert!(error.to_string().contains("absent.toml"), "{error}");

    let binary = dir.path().join("binary.toml");
    std::fs::write(&binary, b"[node]\nname = \"\xff\"\n").unwrap();
    let error = NodeConfig::load(&binary).unwrap_err();
    assert!(matches!(error, ConfigError::Syntax { .. }), "{error:?}");
    assert!(error.to_string().contains("UTF-8"), "{error}");

    let good = dir.path().join("client.toml");
    std::fs::write(&good, CLIENT).unwrap();
    let config = NodeConfig::load(&good).unwrap();
    assert_eq!(config.origin, good);
    assert_eq!(config.tls.ca, dir.path().join("ca.pem"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        if let Err(error) = NodeConfig::parse(&text, ORIGIN) {
            prop_assert!(error.to_string().starts_with(ORIGIN));
        }
    }

    #[test]
    fn arbitrary_toml_like_text_never_panics(
        text in "(\\[[a-z.]{0,12}\\]\n|[a-z_.]{1,12} = (\"[ -~]{0,20}\"|-?[0-9]{1,20}|true|[0-9.e+-]{1,8}|\\[[0-9, ]{0,8}\\]|\\{[a-z =0-9]{0,12}\\})\n|#[ -~]{0,10}\n){0,20}"
    ) {
        if let Err(error) = NodeConfig::parse(&text, ORIGIN) {
            prop_assert!(error.to_string().starts_with(ORIGIN));
        }
    }

    /// Mangled versions of the real examples: the errors then come from deep inside sections.
    #[test]
    fn mangled_examples_never_panic(
        which in 0..3usize,
        cut in any::<proptest::sample::Index>(),
        len in 0..12usize,
        insert in "[ -~\n]{0,8}",
    ) {
        let text = example_text(["master.toml", "storage.toml", "client.toml"][which]);
        let start = cut.index(text.len() + 1);
        let end = (start + len).min(text.len());
        if text.is_char_boundary(start) && text.is_char_boundary(end) {
            let mangled = format!("{}{}{}", &text[..start], insert, &text[end..]);
            if let Err(error) = NodeConfig::parse(&mangled, ORIGIN) {
                prop_assert!(error.to_string().starts_with(ORIGIN));
            }
        }
    }
}

#[test]
fn a_section_given_as_a_value_says_a_table_is_expected() {
    let error = error_of(&format!("log = \"debug\"\n{MASTER}"));
    assert!(matches!(error, ConfigError::WrongType { .. }), "{error:?}");
    assert_names(&error, "log");
    assert!(error.to_string().contains("a [log] table"), "{error}");
}

#[test]
fn limits_have_defaults_and_refuse_zero_naming_the_key() {
    let base = std::fs::read_to_string(example("storage.toml")).expect("read the example");
    let config = NodeConfig::parse(&base, "storage.toml").unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.limits, PeerLimits::default());
    let config = NodeConfig::parse(
        &format!("{base}\n[limits]\nopen_transactions = 8\npending_store_bytes = 1048576\n"),
        "storage.toml",
    )
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.limits.open_transactions, 8);
    assert_eq!(config.limits.pending_store_bytes, 1 << 20);
    assert_eq!(config.limits.streams, PeerLimits::default().streams);
    for (text, key) in [
        ("pending_stores = 0", "limits.pending_stores"),
        ("streams = 5000000000", "limits.streams"),
        ("fanout_sessions = -1", "limits.fanout_sessions"),
        ("sessions = 3", "limits.sessions"),
    ] {
        let error = NodeConfig::parse(&format!("{base}\n[limits]\n{text}\n"), "storage.toml")
            .expect_err(text);
        assert_eq!(error.key(), Some(key), "{text}: {error}");
    }
    // The revocation list is optional and resolved beside the file.
    assert_eq!(
        config.tls.crl.as_deref(),
        Some(std::path::Path::new("certs/crl.pem"))
    );
}

#[test]
fn the_storage_cache_has_redbs_default_and_refuses_less_than_a_mebibyte() {
    let storage_of = |text: &str| {
        let config = NodeConfig::parse(text, ORIGIN).unwrap_or_else(|error| panic!("{error}"));
        let RoleConfig::Storage { storage, .. } = config.role else {
            panic!("not a storage: {:?}", config.role);
        };
        storage
    };
    assert_eq!(storage_of(STORAGE).engine, EngineOptions::default());
    let sized = edit(
        STORAGE,
        "path = \"s1.redb\"\n",
        "path = \"s1.redb\"\ncache_bytes = 67108864\n",
    );
    assert_eq!(storage_of(&sized).engine.cache_bytes, 64 << 20);
    for value in ["1048575", "0"] {
        let text = edit(
            STORAGE,
            "path = \"s1.redb\"\n",
            &format!("path = \"s1.redb\"\ncache_bytes = {value}\n"),
        );
        let error = invalid(&text, "storage.cache_bytes");
        assert!(error.to_string().contains(value), "{error}");
    }
    let text = edit(
        STORAGE,
        "path = \"s1.redb\"\n",
        "path = \"s1.redb\"\ncache_bytes = \"1 GiB\"\n",
    );
    assert_names(&error_of(&text), "storage.cache_bytes");
}
