//! `sealbus ca init`, `sealbus issue` and `sealbus bundle`.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use rand_core::OsRng;
use sealbus_keyring::{CertificateAuthority, Identity, ServiceName, StaticSecret, TrustBundle};

use crate::{CliError, CliResult};

/// Default certificate lifetime in days.
const DEFAULT_VALID_DAYS: u64 = 365;

const SECONDS_PER_DAY: u64 = 24 * 60 * 60;

/// Arguments of `sealbus issue`.
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// CA directory created by `sealbus ca init`.
    #[arg(long, value_name = "CA_DIR")]
    pub ca: PathBuf,
    /// Service name: 1 to 64 characters from A-Z, a-z, 0-9, '.', '_', '-'.
    #[arg(long)]
    pub name: String,
    /// MQTT topic filter the service may publish on; repeat for several.
    #[arg(long = "publish", value_name = "FILTER")]
    pub publish: Vec<String>,
    /// MQTT topic filter the service may subscribe to; repeat for several.
    #[arg(long = "subscribe", value_name = "FILTER")]
    pub subscribe: Vec<String>,
    /// Certificate lifetime in days from now.
    #[arg(long, value_name = "DAYS", default_value_t = DEFAULT_VALID_DAYS)]
    pub valid_days: u64,
    /// Identity directory to write: identity.key (0600), identity.cert and
    /// ca.pub. Existing files there are replaced.
    #[arg(long, value_name = "ID_DIR")]
    pub out: PathBuf,
}

/// Arguments of `sealbus bundle`.
#[derive(Debug, Args)]
pub struct BundleArgs {
    /// CA directory created by `sealbus ca init`.
    #[arg(long, value_name = "CA_DIR")]
    pub ca: PathBuf,
    /// Trust bundle file to write.
    #[arg(long, value_name = "BUNDLE_FILE")]
    pub out: PathBuf,
    /// Identity directory whose certificate is revoked in this bundle;
    /// repeat for several. Its certificate stays listed so receivers can
    /// report "revoked".
    #[arg(long = "revoke", value_name = "ID_DIR")]
    pub revoke: Vec<PathBuf>,
    /// Identity directories whose certificates the bundle lists.
    #[arg(value_name = "ID_DIR", required = true)]
    pub identities: Vec<PathBuf>,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// Runs `sealbus ca init`.
pub fn ca_init(dir: &Path) -> CliResult {
    let authority = CertificateAuthority::init(dir, &mut OsRng).map_err(|error| {
        CliError::context(format!("failed to create a CA in {}", dir.display()), error)
    })?;
    println!(
        "created CA in {} (public key {})",
        dir.display(),
        hex(&authority.public_key().to_bytes())
    );
    Ok(0)
}

/// Runs `sealbus issue`.
pub fn issue(args: &IssueArgs) -> CliResult {
    let name = ServiceName::new(args.name.clone())
        .map_err(|error| CliError::context("invalid --name", error))?;
    if args.publish.is_empty() && args.subscribe.is_empty() {
        return Err(CliError::message(
            "an identity without --publish or --subscribe filters can do nothing; add at least one",
        ));
    }
    let mut authority = CertificateAuthority::open(&args.ca).map_err(|error| {
        CliError::context(
            format!("failed to open the CA in {}", args.ca.display()),
            error,
        )
    })?;
    let secret = StaticSecret::generate(&mut OsRng);
    let not_before = now_s();
    let not_after = args
        .valid_days
        .checked_mul(SECONDS_PER_DAY)
        .and_then(|lifetime| not_before.checked_add(lifetime))
        .ok_or_else(|| {
            CliError::message(format!("--valid-days {} is too large", args.valid_days))
        })?;
    let certificate = authority
        .issue(
            name,
            secret.public_key(),
            args.publish.clone(),
            args.subscribe.clone(),
            not_before,
            not_after,
        )
        .map_err(|error| CliError::context("failed to issue the certificate", error))?;
    let serial = certificate.serial();
    let fingerprint = certificate.fingerprint_hex();
    let identity = Identity::new(secret, certificate)
        .map_err(|error| CliError::context("failed to build the identity", error))?;
    identity
        .save(&args.out, authority.public_key())
        .map_err(|error| {
            CliError::context(
                format!("failed to write the identity to {}", args.out.display()),
                error,
            )
        })?;
    println!(
        "issued {} (serial {serial}, fingerprint {fingerprint}) into {}",
        args.name,
        args.out.display()
    );
    Ok(0)
}

/// Runs `sealbus bundle`.
pub fn bundle(args: &BundleArgs) -> CliResult {
    let mut authority = CertificateAuthority::open(&args.ca).map_err(|error| {
        CliError::context(
            format!("failed to open the CA in {}", args.ca.display()),
            error,
        )
    })?;
    let mut certificates = Vec::new();
    for dir in args.identities.iter().chain(&args.revoke) {
        let certificate = load_certificate(dir)?;
        if !certificates
            .iter()
            .any(|known: &sealbus_keyring::Certificate| {
                known.fingerprint() == certificate.fingerprint()
            })
        {
            certificates.push(certificate);
        }
    }
    let mut revoked = Vec::new();
    for dir in &args.revoke {
        revoked.push(load_certificate(dir)?.fingerprint());
    }
    let bundle = authority
        .sign_bundle(certificates, revoked, now_s())
        .map_err(|error| CliError::context("failed to sign the bundle", error))?;
    bundle.save(&args.out).map_err(|error| {
        CliError::context(format!("failed to write {}", args.out.display()), error)
    })?;
    print_summary(&bundle, &args.out);
    Ok(0)
}

fn load_certificate(dir: &Path) -> Result<sealbus_keyring::Certificate, CliError> {
    let path = dir.join(sealbus_keyring::identity::IDENTITY_CERT_FILE);
    let bytes = std::fs::read(&path).map_err(|error| {
        CliError::context(
            format!(
                "failed to read {}; pass an identity directory written by `sealbus issue`",
                path.display()
            ),
            error,
        )
    })?;
    sealbus_keyring::Certificate::from_json(&bytes).map_err(|error| {
        CliError::context(format!("invalid certificate {}", path.display()), error)
    })
}

fn print_summary(bundle: &TrustBundle, path: &Path) {
    println!(
        "signed trust bundle version {} with {} certificates and {} revocations into {}",
        bundle.version(),
        bundle.certificates().len(),
        bundle.revoked().len(),
        path.display()
    );
}

/// Formats bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
