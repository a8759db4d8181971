//! Steady-state cost of sealing and opening, next to its floor (one raw
//! ChaCha20-Poly1305 seal and open of the same bytes) and the naive design
//! (one Noise X one-way handshake per message per recipient), plus grants
//! and the replay window. Run: `cargo bench -p sealbus-envelope`.

use std::hint::black_box;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sealbus_envelope::replay::ReplayWindow;
use sealbus_envelope::{
    parse_grant, parse_message, seal_grant, EpochKeys, GrantHeader, MessageEnvelope, OpenOptions,
    Receiver, Route, SealOptions, SendingEpoch, StaticKeypair, SymmetricKey,
};

const SIZES: [usize; 4] = [64, 256, 1024, 16 * 1024];
const RECIPIENTS: [usize; 3] = [1, 3, 32];
const TOPIC: &str =
    "edgex/events/device/device-virtual/Random-Integer-Device/Random-Integer-Device/Int16";
const NOW_MS: u64 = 1_780_000_000_000;
const NOISE_X: &str = "Noise_X_25519_ChaChaPoly_BLAKE2s";

fn keypair(seed: u8) -> StaticKeypair {
    let secret = [seed; 32];
    let public =
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(secret)).to_bytes();
    StaticKeypair::new(secret, public)
}

/// A static key pair as snow takes it.
struct NoiseKeys {
    secret: [u8; 32],
    public: [u8; 32],
}

fn noise_keys(seed: u8) -> NoiseKeys {
    let secret = [seed; 32];
    let public =
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(secret)).to_bytes();
    NoiseKeys { secret, public }
}

fn route() -> Route<'static> {
    Route {
        context: "mqtt",
        topic: TOPIC,
    }
}

/// A publisher epoch for `recipients` and the receiver of slot 0.
fn epoch_and_receiver(recipients: usize) -> (SendingEpoch, Receiver) {
    let audience_key = SymmetricKey::from_bytes([7; 32]);
    let origin_keys: Vec<SymmetricKey> = (0..recipients)
        .map(|slot| SymmetricKey::from_bytes([slot as u8 + 1; 32]))
        .collect();
    let epoch =
        SendingEpoch::new("device-virtual", 1, 1, &audience_key, origin_keys.clone()).unwrap();
    let mut receiver = Receiver::new();
    let keys = EpochKeys {
        audience_key,
        origin_key: origin_keys[0].clone(),
        slot: 0,
        audience_size: recipients as u16,
    };
    receiver.install("device-virtual", 1, 1, keys).unwrap();
    (epoch, receiver)
}

fn envelope(size: usize) -> MessageEnvelope {
    MessageEnvelope::new(
        vec![0x5A; size],
        "c0ffee00-0000-4000-8000-000000000001",
        "application/json",
    )
}

fn seal_open(c: &mut Criterion) {
    for size in SIZES {
        let mut group = c.benchmark_group(format!("seal_open/{size}B"));
        group.throughput(Throughput::Bytes(size as u64));
        let message = envelope(size);

        for recipients in RECIPIENTS {
            let (mut epoch, mut receiver) = epoch_and_receiver(recipients);
            group.bench_function(BenchmarkId::new("sealbus", recipients), |bench| {
                bench.iter(|| {
                    let sealed = epoch
                        .seal(
                            &message,
                            &SealOptions {
                                route: route(),
                                timestamp_ms: NOW_MS,
                                grants: &[],
                            },
                        )
                        .unwrap();
                    let parsed = parse_message(&sealed).unwrap();
                    let opened = receiver
                        .open(
                            &parsed,
                            &OpenOptions {
                                route: route(),
                                now_ms: NOW_MS,
                                redelivery: false,
                            },
                        )
                        .unwrap();
                    receiver.commit(&opened).unwrap();
                    black_box(opened.envelope.payload.len())
                })
            });
        }

        let cipher = ChaCha20Poly1305::new(&[7u8; 32].into());
        let mut buffer = vec![0x5Au8; size];
        let mut counter = 0u64;
        group.bench_function("raw-chacha20poly1305", |bench| {
            bench.iter(|| {
                counter += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&counter.to_be_bytes());
                let nonce = Nonce::from(nonce);
                let tag = cipher
                    .encrypt_in_place_detached(&nonce, b"header", &mut buffer)
                    .unwrap();
                cipher
                    .decrypt_in_place_detached(&nonce, b"header", &mut buffer, &tag)
                    .unwrap();
                black_box(buffer[0])
            })
        });

        let ring_key = ring::aead::LessSafeKey::new(
            ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &[7u8; 32]).unwrap(),
        );
        let mut ring_buffer = vec![0x5Au8; size];
        group.bench_function("raw-ring-chacha20poly1305", |bench| {
            bench.iter(|| {
                counter += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&counter.to_be_bytes());
                let tag = ring_key
                    .seal_in_place_separate_tag(
                        ring::aead::Nonce::assume_unique_for_key(nonce),
                        ring::aead::Aad::from(b"header"),
                        &mut ring_buffer,
                    )
                    .unwrap();
                ring_buffer.extend_from_slice(tag.as_ref());
                let plaintext_len = ring_key
                    .open_in_place(
                        ring::aead::Nonce::assume_unique_for_key(nonce),
                        ring::aead::Aad::from(b"header"),
                        &mut ring_buffer,
                    )
                    .unwrap()
                    .len();
                ring_buffer.truncate(plaintext_len);
                black_box(ring_buffer[0])
            })
        });

        // The floor for this wire format: ring sealing and opening exactly the
        // bytes a one-recipient message authenticates (the encoded EdgeX body
        // and the associated data of topic, context and header).
        let (body_len, associated_data_len) = sealed_layout(&message);
        let mut layout_buffer = vec![0x5Au8; body_len];
        let associated_data = vec![0x11u8; associated_data_len];
        group.bench_function("raw-ring-sealed-layout", |bench| {
            bench.iter(|| {
                counter += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&counter.to_be_bytes());
                let tag = ring_key
                    .seal_in_place_separate_tag(
                        ring::aead::Nonce::assume_unique_for_key(nonce),
                        ring::aead::Aad::from(&associated_data),
                        &mut layout_buffer,
                    )
                    .unwrap();
                layout_buffer.extend_from_slice(tag.as_ref());
                let plaintext_len = ring_key
                    .open_in_place(
                        ring::aead::Nonce::assume_unique_for_key(nonce),
                        ring::aead::Aad::from(&associated_data),
                        &mut layout_buffer,
                    )
                    .unwrap()
                    .len();
                layout_buffer.truncate(plaintext_len);
                black_box(layout_buffer[0])
            })
        });

        if size == 256 {
            for recipients in RECIPIENTS {
                group.bench_function(
                    BenchmarkId::new("noise-x-per-message", recipients),
                    |bench| {
                        let sender = noise_keys(1);
                        let receivers: Vec<NoiseKeys> = (0..recipients)
                            .map(|index| noise_keys(10 + index as u8))
                            .collect();
                        let payload = vec![0x5Au8; size];
                        bench.iter(|| noise_x_per_message(&sender, &receivers, &payload))
                    },
                );
            }
        }
        group.finish();
    }
}

/// Returns the encrypted body length and the associated data length of a
/// one-recipient message carrying `message` on the bench topic.
fn sealed_layout(message: &MessageEnvelope) -> (usize, usize) {
    let (mut epoch, _) = epoch_and_receiver(1);
    let sealed = epoch
        .seal(
            message,
            &SealOptions {
                route: route(),
                timestamp_ms: NOW_MS,
                grants: &[],
            },
        )
        .unwrap();
    let header_len = 4 + 1 + "device-virtual".len() + 8 + 4 + 8 + 8 + 2 + 4;
    let body_len = sealed.len() - header_len - 16;
    let associated_data_len = header_len + 1 + "mqtt".len() + 2 + TOPIC.len();
    (body_len, associated_data_len)
}

/// The naive design: a fresh one-way Noise X handshake carries each message
/// to each recipient.
fn noise_x_per_message(sender: &NoiseKeys, receivers: &[NoiseKeys], payload: &[u8]) -> usize {
    let mut opened = 0;
    for receiver in receivers {
        let mut initiator = snow::Builder::new(NOISE_X.parse().unwrap())
            .local_private_key(&sender.secret)
            .unwrap()
            .remote_public_key(&receiver.public)
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut message = vec![0u8; payload.len() + 128];
        let len = initiator.write_message(payload, &mut message).unwrap();
        let mut responder = snow::Builder::new(NOISE_X.parse().unwrap())
            .local_private_key(&receiver.secret)
            .unwrap()
            .build_responder()
            .unwrap();
        let mut plaintext = vec![0u8; payload.len() + 128];
        opened += responder
            .read_message(&message[..len], &mut plaintext)
            .unwrap();
    }
    black_box(opened)
}

fn grants(c: &mut Criterion) {
    let mut group = c.benchmark_group("grant");
    let publisher = keypair(1);
    let subscriber = keypair(2);
    let keys = EpochKeys {
        audience_key: SymmetricKey::from_bytes([7; 32]),
        origin_key: SymmetricKey::from_bytes([8; 32]),
        slot: 0,
        audience_size: 1,
    };
    let header = GrantHeader {
        sender: "device-virtual",
        recipient: "core-data",
        session: 1,
        epoch: 1,
    };
    group.bench_function("create-per-recipient", |bench| {
        bench.iter(|| {
            black_box(seal_grant(&header, &keys, &publisher, subscriber.public(), None).unwrap())
        })
    });
    let grant = seal_grant(&header, &keys, &publisher, subscriber.public(), None).unwrap();
    let mut epoch = 0u32;
    group.bench_function("process-per-recipient", |bench| {
        let mut receiver = Receiver::new();
        bench.iter(|| {
            let keys = parse_grant(&grant)
                .unwrap()
                .open("core-data", &subscriber, publisher.public())
                .unwrap();
            epoch += 1;
            black_box(receiver.install("device-virtual", 1, epoch, keys).unwrap())
        })
    });
    group.finish();
}

fn replay_window(c: &mut Criterion) {
    let mut group = c.benchmark_group("replay_window");
    let mut window = ReplayWindow::new();
    let mut sequence = 0u64;
    group.bench_function("check-and-commit", |bench| {
        bench.iter(|| {
            sequence += 1;
            window.check(black_box(sequence)).unwrap();
            window.commit(sequence).unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, seal_open, grants, replay_window);
criterion_main!(benches);
