//! The operator's path through files on disk: CA directory, identity
//! directories, bundle file, and a service loading them into a policy.

use std::fs::{self, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine;
use sealbus_keyring::{
    load_ca_public, Certificate, CertificateAuthority, Identity, KeyringError, Policy, ServiceName,
    StaticSecret, TrustBundle,
};

const NOW: u64 = 1_700_000_000;
const DAY: u64 = 86_400;

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn issue_identity(
    ca: &mut CertificateAuthority,
    name: &str,
    publish: &[&str],
    subscribe: &[&str],
) -> Identity {
    let secret = StaticSecret::generate(&mut rand_core::OsRng);
    let certificate = ca
        .issue(
            ServiceName::new(name).unwrap(),
            secret.public_key(),
            publish.iter().map(|f| f.to_string()).collect(),
            subscribe.iter().map(|f| f.to_string()).collect(),
            NOW,
            NOW + 30 * DAY,
        )
        .unwrap();
    Identity::new(secret, certificate).unwrap()
}

#[test]
fn issue_distribute_and_authorize() {
    let root = tempfile::tempdir().unwrap();
    let ca_dir = root.path().join("ca");
    let mut ca = CertificateAuthority::init(&ca_dir, &mut rand_core::OsRng).unwrap();

    let publisher = issue_identity(
        &mut ca,
        "device-virtual",
        &["edgex/events/device/device-virtual/#"],
        &[],
    );
    let subscriber = issue_identity(&mut ca, "core-data", &[], &["edgex/events/#"]);
    for identity in [&publisher, &subscriber] {
        identity
            .save(&root.path().join(identity.name().as_str()), ca.public_key())
            .unwrap();
    }
    let bundle_path = root.path().join("bundle.json");
    ca.sign_bundle(
        vec![
            publisher.certificate().clone(),
            subscriber.certificate().clone(),
        ],
        vec![],
        NOW,
    )
    .unwrap()
    .save(&bundle_path)
    .unwrap();
    drop(ca);

    // What a service does at start-up, with only its own directory and the bundle.
    let service_dir = root.path().join("core-data");
    let identity = Identity::load(&service_dir).unwrap();
    let ca_public = load_ca_public(&service_dir).unwrap();
    identity.certificate().verify(&ca_public, NOW).unwrap();
    let policy = Policy::new(TrustBundle::load(&bundle_path).unwrap(), &ca_public).unwrap();

    let topic = "edgex/events/device/device-virtual/Random-Integer-Device/Int8";
    policy
        .authorize_publisher("device-virtual", topic, NOW)
        .unwrap();
    policy
        .authorize_subscriber("core-data", topic, NOW)
        .unwrap();
    let audience: Vec<&str> = policy
        .audience(topic, NOW)
        .iter()
        .map(|c| c.name().as_str())
        .collect();
    assert_eq!(audience, ["core-data"]);
    assert_eq!(
        policy
            .certificate("core-data", NOW)
            .unwrap()
            .x25519_public(),
        &identity.public_key()
    );
}

#[test]
fn saved_key_files_are_owner_only() {
    let root = tempfile::tempdir().unwrap();
    let ca_dir = root.path().join("ca");
    let mut ca = CertificateAuthority::init(&ca_dir, &mut rand_core::OsRng).unwrap();
    let identity = issue_identity(&mut ca, "svc", &["a"], &[]);
    let id_dir = root.path().join("svc");
    identity.save(&id_dir, ca.public_key()).unwrap();

    assert_eq!(mode_of(&ca_dir.join("ca.key")), 0o600);
    assert_eq!(mode_of(&id_dir.join("identity.key")), 0o600);
    assert_eq!(mode_of(&id_dir.join("identity.cert")), 0o644);
    assert_eq!(mode_of(&id_dir.join("ca.pub")), 0o644);
}

#[test]
fn readable_key_files_fail_to_load() {
    let root = tempfile::tempdir().unwrap();
    let ca_dir = root.path().join("ca");
    let mut ca = CertificateAuthority::init(&ca_dir, &mut rand_core::OsRng).unwrap();
    let identity = issue_identity(&mut ca, "svc", &["a"], &[]);
    let id_dir = root.path().join("svc");
    identity.save(&id_dir, ca.public_key()).unwrap();
    drop(ca);

    for (dir, file) in [(&id_dir, "identity.key"), (&ca_dir, "ca.key")] {
        let path = dir.join(file);
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        let error = if file == "ca.key" {
            CertificateAuthority::open(dir).map(|_| ()).unwrap_err()
        } else {
            Identity::load(dir).map(|_| ()).unwrap_err()
        };
        let message = error.to_string();
        assert!(
            matches!(error, KeyringError::KeyFilePermissions { mode: 0o644, .. }),
            "{error:?}"
        );
        assert!(
            message.contains(&format!("chmod 600 {}", path.display())),
            "{message}"
        );

        fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
    }
    assert!(Identity::load(&id_dir).is_ok());
    assert!(CertificateAuthority::open(&ca_dir).is_ok());
}

/// Changes one field of a certificate's JSON form to another well-formed value.
fn tamper_certificate(certificate: &Certificate, field: &str) -> Vec<u8> {
    let mut value: serde_json::Value = serde_json::from_str(&certificate.to_json()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    match field {
        "serial" => value["serial"] = (value["serial"].as_u64().unwrap() + 1).into(),
        "name" => value["name"] = "core-datA".into(),
        "x25519_public" => {
            let mut key = b64
                .decode(value["x25519_public"].as_str().unwrap())
                .unwrap();
            key[0] ^= 0x80;
            value["x25519_public"] = b64.encode(key).into();
        }
        "publish" => value["publish"] = serde_json::json!(["#"]),
        "subscribe" => value["subscribe"] = serde_json::json!(["edgex/#", "more/#"]),
        "not_before" => value["not_before"] = (NOW - 1).into(),
        "not_after" => value["not_after"] = (NOW + 365 * DAY).into(),
        "signature" => {
            let mut signature = b64.decode(value["signature"].as_str().unwrap()).unwrap();
            signature[10] ^= 0x01;
            value["signature"] = b64.encode(signature).into();
        }
        other => panic!("no tampering defined for {other}"),
    }
    serde_json::to_vec(&value).unwrap()
}

#[test]
fn tampered_certificate_json_fails() {
    let mut ca = CertificateAuthority::in_memory(&mut rand_core::OsRng);
    let identity = issue_identity(&mut ca, "core-data", &["edgex/events/#"], &["edgex/#"]);
    let fields = [
        "serial",
        "name",
        "x25519_public",
        "publish",
        "subscribe",
        "not_before",
        "not_after",
        "signature",
    ];
    for field in fields {
        let input = tamper_certificate(identity.certificate(), field);
        let parsed = Certificate::from_json(&input).unwrap();
        let result = parsed.verify(ca.public_key(), NOW + 1);
        assert!(
            matches!(result, Err(KeyringError::BadSignature { .. })),
            "tampered {field}: {result:?}"
        );
    }
}

/// A named change to a JSON document.
type JsonEdit = (&'static str, Box<dyn Fn(&mut serde_json::Value)>);

#[test]
fn tampered_bundle_json_fails() {
    let mut ca = CertificateAuthority::in_memory(&mut rand_core::OsRng);
    let a = issue_identity(&mut ca, "a", &["a/#"], &[]);
    let b = issue_identity(&mut ca, "b", &["b/#"], &[]);
    let old_b = issue_identity(&mut ca, "b", &["old/#"], &[]);
    let bundle = ca
        .sign_bundle(
            vec![
                a.certificate().clone(),
                b.certificate().clone(),
                old_b.certificate().clone(),
            ],
            vec![old_b.certificate().fingerprint()],
            NOW,
        )
        .unwrap();
    let original: serde_json::Value = serde_json::from_str(&bundle.to_json()).unwrap();

    let edits: Vec<JsonEdit> = vec![
        ("version", Box::new(|v| v["version"] = 99.into())),
        ("issued_at", Box::new(|v| v["issued_at"] = (NOW + 1).into())),
        (
            "certificate dropped",
            Box::new(|v| {
                v["certificates"].as_array_mut().unwrap().remove(0);
            }),
        ),
        (
            "revocation dropped",
            Box::new(|v| v["revoked"] = serde_json::json!([])),
        ),
        (
            "certificate publish widened",
            Box::new(|v| v["certificates"][0]["publish"] = serde_json::json!(["#"])),
        ),
        (
            "signature",
            Box::new(|v| {
                let b64 = base64::engine::general_purpose::STANDARD;
                let mut signature = b64.decode(v["signature"].as_str().unwrap()).unwrap();
                signature[0] ^= 0x01;
                v["signature"] = b64.encode(signature).into();
            }),
        ),
    ];
    for (name, edit) in edits {
        let mut value = original.clone();
        edit(&mut value);
        let parsed = TrustBundle::from_json(value.to_string().as_bytes()).unwrap();
        let result = Policy::new(parsed, ca.public_key());
        assert!(
            matches!(result, Err(KeyringError::BadSignature { .. })),
            "{name}: {:?}",
            result.map(|policy| policy.version())
        );
    }
}
