//! The `sealbus` binary end to end: key management, pub and watch against
//! real mosquitto and redis-server processes, and the demo.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use sealbus_integration::{BrokerKind, BrokerProcess};
use serde_json::Value;

const SEALBUS: &str = env!("CARGO_BIN_EXE_sealbus");
const TOPIC: &str = "edgex/events/device/device-virtual/Random/Random/Int16";

fn sealbus(args: &[&str]) -> Output {
    Command::new(SEALBUS)
        .args(args)
        .output()
        .expect("failed to run sealbus")
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// CA, device-virtual (publisher), core-data (subscriber) and a bundle.
    fn new() -> Self {
        let keys = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        assert_success(
            &sealbus(&["ca", "init", "--dir", &keys.arg("ca")]),
            "ca init",
        );
        let issue = |name: &str, flag: &str, filter: &str| {
            let out = keys.arg(name);
            assert_success(
                &sealbus(&[
                    "issue",
                    "--ca",
                    &keys.arg("ca"),
                    "--name",
                    name,
                    flag,
                    filter,
                    "--out",
                    &out,
                ]),
                "issue",
            );
        };
        issue(
            "device-virtual",
            "--publish",
            "edgex/events/device/device-virtual/#",
        );
        issue("core-data", "--subscribe", "edgex/events/#");
        let bundle = keys.arg("bundle.json");
        assert_success(
            &sealbus(&[
                "bundle",
                "--ca",
                &keys.arg("ca"),
                "--out",
                &bundle,
                &keys.arg("device-virtual"),
                &keys.arg("core-data"),
            ]),
            "bundle",
        );
        keys
    }
}

/// Starts `sealbus watch` and waits until it confirmed its subscription.
fn start_watch(keys: &Keys, url: &str, bundle: &str, extra: &[&str]) -> Child {
    let mut child = Command::new(SEALBUS)
        .args([
            "watch",
            "--url",
            url,
            "--identity",
            &keys.arg("core-data"),
            "--bundle",
            bundle,
            "--topic",
            "edgex/events/#",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines
            .next()
            .expect("watch exited before subscribing")
            .unwrap();
        if line.starts_with("watching ") {
            break;
        }
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

fn publish(keys: &Keys, url: &str, bundle: &str, extra: &[&str]) -> Output {
    let mut args = vec!["pub", "--url", url, "--identity"];
    let identity = keys.arg("device-virtual");
    args.push(&identity);
    args.extend(["--bundle", bundle, "--topic", TOPIC]);
    args.extend(extra);
    sealbus(&args)
}

fn watch_output(child: Child) -> (i32, Vec<Value>) {
    let output = child.wait_with_output().unwrap();
    let lines = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("watch printed invalid JSON {line:?}: {error}"))
        })
        .collect();
    (output.status.code().unwrap_or(-1), lines)
}

fn pub_and_watch(kind: BrokerKind) {
    let broker = BrokerProcess::start_new(kind);
    let keys = Keys::new();
    let bundle = keys.arg("bundle.json");
    let watch = start_watch(
        &keys,
        &broker.url(),
        &bundle,
        &["--count", "2", "--timeout", "30"],
    );
    let published = publish(
        &keys,
        &broker.url(),
        &bundle,
        &[
            "--payload",
            r#"{"value":"42"}"#,
            "--correlation-id",
            "corr-1",
        ],
    );
    assert_success(&published, "pub");
    let binary = keys.path("binary.bin");
    std::fs::write(&binary, [0xFFu8, 0x00, 0x80]).unwrap();
    let published = publish(
        &keys,
        &broker.url(),
        &bundle,
        &[
            "--file",
            &binary.display().to_string(),
            "--content-type",
            "application/octet-stream",
        ],
    );
    assert_success(&published, "pub --file");

    let (code, lines) = watch_output(watch);
    assert_eq!(code, 0);
    assert_eq!(lines.len(), 2);
    let text = &lines[0];
    assert_eq!(text["verdict"], "ok");
    assert_eq!(text["sender"], "device-virtual");
    assert_eq!(text["topic"], TOPIC);
    assert_eq!(text["payload"], r#"{"value":"42"}"#);
    assert_eq!(text["contentType"], "application/json");
    assert_eq!(text["correlationID"], "corr-1");
    assert!(text.get("payloadEncoding").is_none());
    let binary = &lines[1];
    assert_eq!(binary["payload"], "/wCA");
    assert_eq!(binary["payloadEncoding"], "base64");
    assert_eq!(binary["contentType"], "application/octet-stream");
}

#[test]
fn mqtt_pub_and_watch() {
    pub_and_watch(BrokerKind::Mosquitto);
}

#[test]
fn redis_pub_and_watch() {
    pub_and_watch(BrokerKind::Redis);
}

#[test]
fn watch_reports_revoked_sender() {
    let broker = BrokerProcess::mosquitto();
    let keys = Keys::new();
    let revoked_bundle = keys.arg("revoked.json");
    assert_success(
        &sealbus(&[
            "bundle",
            "--ca",
            &keys.arg("ca"),
            "--out",
            &revoked_bundle,
            "--revoke",
            &keys.arg("device-virtual"),
            &keys.arg("core-data"),
        ]),
        "bundle --revoke",
    );
    let watch = start_watch(
        &keys,
        &broker.url(),
        &revoked_bundle,
        &["--count", "1", "--timeout", "30"],
    );
    // The publisher still holds the old bundle, in which it is valid.
    assert_success(
        &publish(
            &keys,
            &broker.url(),
            &keys.arg("bundle.json"),
            &["--payload", "x"],
        ),
        "pub",
    );
    let (code, lines) = watch_output(watch);
    assert_eq!(code, 0);
    assert_eq!(lines[0]["verdict"], "revoked");
    assert_eq!(lines[0]["claimedSender"], "device-virtual");
    assert!(lines[0].get("sender").is_none());
    assert!(lines[0].get("payload").is_none());
}

#[test]
fn watch_times_out_with_status_3() {
    let broker = BrokerProcess::redis();
    let keys = Keys::new();
    let watch = start_watch(
        &keys,
        &broker.url(),
        &keys.arg("bundle.json"),
        &["--count", "1", "--timeout", "1"],
    );
    let (code, lines) = watch_output(watch);
    assert_eq!(code, 3);
    assert!(lines.is_empty());
}

#[test]
fn key_files_are_private_and_checked() {
    let keys = Keys::new();
    for path in [keys.path("ca/ca.key"), keys.path("core-data/identity.key")] {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    let key = keys.path("device-virtual/identity.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = publish(
        &keys,
        "mqtt://127.0.0.1:1",
        &keys.arg("bundle.json"),
        &["--payload", "x"],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert!(stderr.contains(&key.display().to_string()), "{stderr}");
}

#[test]
fn ca_init_refuses_to_overwrite() {
    let keys = Keys::new();
    let before = std::fs::read(keys.path("ca/ca.key")).unwrap();
    let output = sealbus(&["ca", "init", "--dir", &keys.arg("ca")]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(std::fs::read(keys.path("ca/ca.key")).unwrap(), before);
}

#[test]
fn invalid_arguments_name_the_value() {
    let keys = Keys::new();
    let output = sealbus(&[
        "issue",
        "--ca",
        &keys.arg("ca"),
        "--name",
        "bad name",
        "--publish",
        "a/#",
        "--out",
        &keys.arg("x"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("bad name"));
    let output = sealbus(&[
        "issue",
        "--ca",
        &keys.arg("ca"),
        "--name",
        "ok",
        "--publish",
        "a/#/b",
        "--out",
        &keys.arg("x"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("a/#/b"));
    let output = sealbus(&[
        "pub",
        "--url",
        "ftp://x",
        "--identity",
        "x",
        "--bundle",
        "y",
        "--topic",
        "t",
        "--payload",
        "p",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("ftp://x"));
}

#[test]
fn help_documents_every_command() {
    let output = sealbus(&["--help"]);
    assert_success(&output, "--help");
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["ca", "issue", "bundle", "pub", "watch", "demo"] {
        assert!(help.contains(command), "--help does not mention {command}");
    }
    let output = sealbus(&["watch", "--help"]);
    let help = String::from_utf8_lossy(&output.stdout);
    for option in [
        "--url",
        "--identity",
        "--bundle",
        "--topic",
        "--count",
        "--timeout",
    ] {
        assert!(
            help.contains(option),
            "watch --help does not mention {option}"
        );
    }
}

#[test]
fn demo_holds_every_expectation() {
    let output = Command::new(SEALBUS).arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "demo failed:\n{stdout}");
    assert!(stdout.contains("all expectations held"), "{stdout}");
    assert!(!stdout.contains('✘'), "{stdout}");
}

#[test]
fn bench_json_reports_every_case() {
    let output = Command::new(SEALBUS)
        .args([
            "bench",
            "--messages",
            "300",
            "--json",
            "--memory-publishers",
            "20",
        ])
        .output()
        .unwrap();
    assert_success(&output, "bench --json");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let cases: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(cases.len(), 12, "{stdout}");
    for case in &cases {
        for field in [
            "broker",
            "qos",
            "subscribers",
            "mode",
            "messages",
            "msgs_per_s",
            "p50_us",
            "p99_us",
            "cpu_us_per_msg_pub",
            "cpu_us_per_msg_sub",
            "wire_bytes_per_msg",
            "lost",
        ] {
            assert!(case.get(field).is_some(), "missing {field} in {case}");
        }
        assert_eq!(case["messages"], 300);
        assert!(case["msgs_per_s"].as_f64().unwrap() > 0.0, "{case}");
    }
    for broker in ["mqtt", "redis"] {
        for mode in ["plain", "sealed"] {
            assert!(
                cases
                    .iter()
                    .any(|case| case["broker"] == broker && case["mode"] == mode),
                "no {broker} {mode} case"
            );
        }
    }
    assert!(cases.iter().any(|case| case["qos"] == 1));
    // Each case's audience is its own subscribers: a message to three
    // recipients carries three 16-byte origin tags, and one to a single
    // recipient none.
    let sealed_wire = |subscribers: u64| {
        cases
            .iter()
            .find(|case| {
                case["mode"] == "sealed"
                    && case["broker"] == "redis"
                    && case["subscribers"] == subscribers
            })
            .unwrap()["wire_bytes_per_msg"]
            .as_f64()
            .unwrap()
    };
    let extra = sealed_wire(3) - sealed_wire(1);
    assert!(
        (48.0..56.0).contains(&extra),
        "3 recipients add {extra} bytes per message, expected 48 plus grants"
    );
    let sealed = cases.iter().find(|case| case["mode"] == "sealed").unwrap();
    assert!(sealed["throughput_ratio"].as_f64().is_some(), "{sealed}");
    let memory: Value = serde_json::from_str(
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(memory["publishers"], 20);
    assert_eq!(memory["delivered"], 200);
    assert_eq!(memory["senders_tracked"], 20);
}

#[test]
fn bench_rejects_zero_messages_and_rounds() {
    for option in ["--messages=0", "--rounds=0", "--rounds=16"] {
        let output = sealbus(&["bench", option]);
        assert_eq!(output.status.code(), Some(2), "{option}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("invalid value"), "{option}: {stderr}");
    }
}

#[test]
fn bench_pin_runs_or_says_why_not() {
    let output = sealbus(&[
        "bench",
        "--pin",
        "--messages",
        "100",
        "--json",
        "--memory-publishers",
        "0",
    ]);
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    if cpus >= 2 {
        assert_success(&output, "bench --pin");
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert_eq!(stdout.lines().count(), 12, "{stdout}");
    } else {
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--pin needs at least 2 CPUs"), "{stderr}");
    }
}

#[test]
fn watch_rejects_invalid_timeout() {
    for timeout in ["0", "-1", "nan", "1e19", "soon"] {
        // The `=` form keeps clap from reading "-1" as a flag.
        let option = format!("--timeout={timeout}");
        let output = sealbus(&[
            "watch",
            "--url",
            "mqtt://127.0.0.1:1",
            "--identity",
            "x",
            "--bundle",
            "y",
            "--topic",
            "t",
            &option,
        ]);
        assert_eq!(output.status.code(), Some(2), "--timeout {timeout}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("--timeout"),
            "--timeout {timeout}"
        );
    }
}
