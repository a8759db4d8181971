//! Redis transport against a real redis-server.

mod common;

use bytes::Bytes;
use common::{filters, next_message, wait_for_generation, wait_for_state, Broker};
use sealbus_bus_adapters::config::{BusConfig, BusKind};
use sealbus_bus_adapters::transport::{ConnectionState, Transport};
use sealbus_bus_adapters::AdapterError;

fn config_for(broker: &Broker) -> BusConfig {
    let config = BusConfig::from_url(&broker.url()).expect("broker URL parses");
    assert_eq!(config.kind, BusKind::Redis);
    config
}

/// Runs one command on a plain Redis connection, outside the transport.
async fn redis_command(broker: &Broker, command: &redis::Cmd) -> redis::RedisResult<redis::Value> {
    let client = redis::Client::open(broker.url())?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    command.query_async(&mut connection).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_after_confirmed_subscribe() {
    let broker = Broker::redis();
    let (subscriber, mut received) = Transport::connect(&config_for(&broker)).await.unwrap();
    let (publisher, _unused) = Transport::connect(&config_for(&broker)).await.unwrap();
    assert_eq!(publisher.kind(), BusKind::Redis);

    // subscribe returns after Redis confirmed SUBSCRIBE, so the very next
    // publish already reaches the subscriber.
    subscriber
        .subscribe(&filters(&["edgex/events/x"]))
        .await
        .unwrap();
    publisher
        .publish("edgex/events/x", Bytes::from_static(b"reading"))
        .await
        .unwrap();

    let message = next_message(&mut received).await;
    assert_eq!(message.topic, "edgex/events/x");
    assert_eq!(message.payload, Bytes::from_static(b"reading"));
    assert!(!message.duplicate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_filters_match_mqtt_rules() {
    let broker = Broker::redis();
    let (subscriber, mut received) = Transport::connect(&config_for(&broker)).await.unwrap();
    let (publisher, _unused) = Transport::connect(&config_for(&broker)).await.unwrap();
    subscriber
        .subscribe(&filters(&["w/+/c", "w/x/#", "end"]))
        .await
        .unwrap();

    // Redis's `w/*/c` pattern also matches `w/a/b/c`; the transport filters
    // that out, as it does `w/xy` for the `w/x*` pattern of `w/x/#`.
    for topic in ["w/a/c", "w/a/d", "w/a/b/c", "w/x", "w/x/y/z", "w/xy", "end"] {
        publisher
            .publish(topic, Bytes::from(topic.to_owned()))
            .await
            .unwrap();
    }

    let mut topics = Vec::new();
    loop {
        let message = next_message(&mut received).await;
        if message.topic == "end" {
            break;
        }
        assert_eq!(message.payload, Bytes::from(message.topic.clone()));
        topics.push(message.topic);
    }
    assert_eq!(topics, vec!["w/a/c", "w/x", "w/x/y/z"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_filters_deliver_once() {
    let broker = Broker::redis();
    let (transport, mut received) = Transport::connect(&config_for(&broker)).await.unwrap();
    transport
        .subscribe(&filters(&["o/x", "o/+", "o/#"]))
        .await
        .unwrap();

    transport
        .publish("o/x", Bytes::from_static(b"first"))
        .await
        .unwrap();
    transport
        .publish("o/x", Bytes::from_static(b"first"))
        .await
        .unwrap();
    transport
        .publish("o/y", Bytes::from_static(b"second"))
        .await
        .unwrap();

    // Redis sends three copies of each o/x message and two of o/y.
    assert_eq!(
        next_message(&mut received).await.payload,
        Bytes::from_static(b"first")
    );
    assert_eq!(
        next_message(&mut received).await.payload,
        Bytes::from_static(b"first")
    );
    let third = next_message(&mut received).await;
    assert_eq!(third.topic, "o/y");
    assert_eq!(third.payload, Bytes::from_static(b"second"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_changes_mid_stream_deliver_each_message_once() {
    const MESSAGES: u32 = 3000;
    let broker = Broker::redis();
    let (transport, mut received) = Transport::connect(&config_for(&broker)).await.unwrap();
    transport
        .subscribe(&filters(&["s/x", "s/#"]))
        .await
        .unwrap();
    let (publisher, _unused) = Transport::connect(&config_for(&broker)).await.unwrap();
    let stream = tokio::spawn(async move {
        for index in 0..MESSAGES {
            publisher
                .publish("s/x", Bytes::from(index.to_be_bytes().to_vec()))
                .await
                .unwrap();
        }
    });

    // While the stream runs, drop the exact channel and add it back: Redis
    // sends one copy or two depending on when it applies each change.
    let mut counts = vec![0u32; MESSAGES as usize];
    let mut total = 0;
    while counts.contains(&0) {
        let message = next_message(&mut received).await;
        let index = u32::from_be_bytes(message.payload[..].try_into().unwrap());
        counts[index as usize] += 1;
        total += 1;
        if total == 500 {
            transport.unsubscribe(&filters(&["s/x"])).await.unwrap();
        }
        if total == 1500 {
            transport.subscribe(&filters(&["s/x"])).await.unwrap();
        }
    }
    stream.await.unwrap();
    let repeated: Vec<usize> = (0..counts.len())
        .filter(|&index| counts[index] > 1)
        .collect();
    assert!(
        repeated.is_empty(),
        "delivered more than once: {repeated:?}"
    );
    let late = tokio::time::timeout(std::time::Duration::from_millis(300), received.recv()).await;
    assert!(
        late.is_err(),
        "an extra copy arrived after the stream: {late:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_subscription_is_error() {
    let broker = Broker::redis();
    // Redis 7 channel permissions: the default user may use only `allowed/*`.
    let restrict = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("resetchannels")
        .arg("&allowed/*")
        .clone();
    redis_command(&broker, &restrict).await.unwrap();

    let (transport, _received) = Transport::connect(&config_for(&broker)).await.unwrap();
    transport.subscribe(&filters(&["allowed/x"])).await.unwrap();
    let error = transport
        .subscribe(&filters(&["denied/x"]))
        .await
        .unwrap_err();
    match error {
        AdapterError::SubscribeFailed { filter, .. } => assert_eq!(filter, "denied/x"),
        other => panic!("expected SubscribeFailed, got {other:?}"),
    }
    transport.subscribe(&filters(&["allowed/y"])).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_rejected_before_sending() {
    let broker = Broker::redis();
    let mut config = config_for(&broker);
    config.max_message_size = 64 * 1024;
    let (subscriber, mut received) = Transport::connect(&config).await.unwrap();
    let (publisher, _unused) = Transport::connect(&config).await.unwrap();
    let topic = "big/payload";
    subscriber.subscribe(&filters(&[topic])).await.unwrap();

    let limit = publisher.max_message_size();
    let fitting = publisher.max_payload_len(topic);
    assert_eq!(publisher.message_size(topic, fitting), limit);

    let error = publisher
        .publish(topic, Bytes::from(vec![1u8; fitting + 1]))
        .await
        .unwrap_err();
    match error {
        AdapterError::MessageTooLarge {
            size,
            limit: reported,
        } => {
            assert_eq!(size, limit + 1);
            assert_eq!(reported, limit);
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }

    let at_limit: Vec<u8> = (0..fitting).map(|index| (index % 251) as u8).collect();
    publisher
        .publish(topic, Bytes::from(at_limit.clone()))
        .await
        .unwrap();
    publisher
        .publish(topic, Bytes::from(vec![2u8; fitting - 1]))
        .await
        .unwrap();

    let first = next_message(&mut received).await;
    assert_eq!(first.payload, Bytes::from(at_limit));
    let second = next_message(&mut received).await;
    assert_eq!(second.payload, Bytes::from(vec![2u8; fitting - 1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_drops_message_over_its_limit() {
    let broker = Broker::redis();
    let mut small = config_for(&broker);
    small.max_message_size = 1024;
    let (subscriber, mut received) = Transport::connect(&small).await.unwrap();
    let (publisher, _unused) = Transport::connect(&config_for(&broker)).await.unwrap();
    subscriber.subscribe(&filters(&["limit/t"])).await.unwrap();

    publisher
        .publish("limit/t", Bytes::from(vec![0u8; 4096]))
        .await
        .unwrap();
    publisher
        .publish("limit/t", Bytes::from_static(b"small"))
        .await
        .unwrap();
    assert_eq!(
        next_message(&mut received).await.payload,
        Bytes::from_static(b"small")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery() {
    let broker = Broker::redis();
    let (transport, mut received) = Transport::connect(&config_for(&broker)).await.unwrap();
    transport
        .subscribe(&filters(&["u/a", "u/+", "u/b"]))
        .await
        .unwrap();
    transport
        .unsubscribe(&filters(&["u/a", "u/+"]))
        .await
        .unwrap();

    transport
        .publish("u/a", Bytes::from_static(b"gone"))
        .await
        .unwrap();
    transport
        .publish("u/c", Bytes::from_static(b"gone too"))
        .await
        .unwrap();
    transport
        .publish("u/b", Bytes::from_static(b"kept"))
        .await
        .unwrap();
    let message = next_message(&mut received).await;
    assert_eq!(message.topic, "u/b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_and_resubscribes_after_broker_restart() {
    let mut broker = Broker::redis();
    let (subscriber, mut received) = Transport::connect(&config_for(&broker)).await.unwrap();
    let (publisher, _unused) = Transport::connect(&config_for(&broker)).await.unwrap();
    subscriber
        .subscribe(&filters(&["restart/#", "exact"]))
        .await
        .unwrap();
    publisher
        .publish("restart/before", Bytes::from_static(b"1"))
        .await
        .unwrap();
    assert_eq!(next_message(&mut received).await.topic, "restart/before");

    broker.stop();
    wait_for_state(&subscriber, ConnectionState::Connecting).await;
    broker.start();

    // Connected again means the new connection confirmed every subscription.
    wait_for_generation(&subscriber, 2).await;
    publisher
        .publish("restart/after", Bytes::from_static(b"2"))
        .await
        .unwrap();
    publisher
        .publish("exact", Bytes::from_static(b"3"))
        .await
        .unwrap();
    let first = next_message(&mut received).await;
    assert_eq!(first.topic, "restart/after");
    assert_eq!(first.payload, Bytes::from_static(b"2"));
    assert_eq!(next_message(&mut received).await.topic, "exact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_while_disconnected_waits_for_reconnect() {
    let mut broker = Broker::redis();
    let (subscriber, mut received) = Transport::connect(&config_for(&broker)).await.unwrap();
    broker.stop();
    wait_for_state(&subscriber, ConnectionState::Connecting).await;

    let pending = tokio::spawn({
        let subscriber = subscriber.clone();
        async move { subscriber.subscribe(&filters(&["late/#"])).await }
    });
    broker.start();
    pending.await.unwrap().unwrap();

    let (publisher, _unused) = Transport::connect(&config_for(&broker)).await.unwrap();
    publisher
        .publish("late/x", Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(next_message(&mut received).await.topic, "late/x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_publisher_delivers_before_disconnect() {
    let broker = Broker::redis();
    let (subscriber, mut received) = Transport::connect(&config_for(&broker)).await.unwrap();
    subscriber.subscribe(&filters(&["oneshot"])).await.unwrap();

    let (publisher, _unused) = Transport::connect(&config_for(&broker)).await.unwrap();
    for index in 0..20u8 {
        publisher
            .publish("oneshot", Bytes::from(vec![index]))
            .await
            .unwrap();
    }
    publisher.disconnect().await.unwrap();
    assert_eq!(
        *publisher.connection_state().borrow(),
        ConnectionState::Disconnected
    );

    for index in 0..20u8 {
        assert_eq!(
            next_message(&mut received).await.payload,
            Bytes::from(vec![index])
        );
    }
    let error = publisher
        .publish("oneshot", Bytes::new())
        .await
        .unwrap_err();
    assert!(
        matches!(error, AdapterError::NotConnected { .. }),
        "{error:?}"
    );
    let error = publisher.subscribe(&filters(&["x"])).await.unwrap_err();
    assert!(
        matches!(error, AdapterError::NotConnected { .. }),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_fails_without_broker() {
    let mut broker = Broker::redis();
    let config = config_for(&broker);
    broker.stop();

    let error = Transport::connect(&config).await.unwrap_err();
    assert!(
        matches!(
            error,
            AdapterError::ConnectFailed { .. } | AdapterError::ConnectTimedOut { .. }
        ),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains(&format!("127.0.0.1:{}", broker.port())),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_loss_detected_by_ping() {
    let broker = Broker::redis();
    let proxy = stalling_proxy::Proxy::start(broker.port()).await;
    let proxied = BusConfig::from_url(&format!("redis://127.0.0.1:{}", proxy.port())).unwrap();
    let (subscriber, mut received) = Transport::connect(&proxied).await.unwrap();
    subscriber.subscribe(&filters(&["silent/#"])).await.unwrap();

    // The old connections stay open but carry nothing, as when a network path
    // drops packets. Only the PING check can notice.
    proxy.stall_existing_connections();
    wait_for_state(&subscriber, ConnectionState::Connecting).await;
    wait_for_generation(&subscriber, 2).await;

    let (publisher, _unused) = Transport::connect(&config_for(&broker)).await.unwrap();
    publisher
        .publish("silent/x", Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(next_message(&mut received).await.topic, "silent/x");
}

/// A TCP proxy on 127.0.0.1 that can stop forwarding on its current
/// connections without closing them, while new connections work normally.
mod stalling_proxy {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
    use tokio::net::{TcpListener, TcpStream};

    pub struct Proxy {
        port: u16,
        epoch: Arc<AtomicU64>,
    }

    impl Proxy {
        pub async fn start(target_port: u16) -> Proxy {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let epoch = Arc::new(AtomicU64::new(0));
            let accept_epoch = epoch.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)).await else {
                        continue;
                    };
                    let connection_epoch = accept_epoch.load(Ordering::SeqCst);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let epoch = accept_epoch.clone();
                    tokio::spawn(forward(
                        client_read,
                        server_write,
                        epoch.clone(),
                        connection_epoch,
                    ));
                    tokio::spawn(forward(server_read, client_write, epoch, connection_epoch));
                }
            });
            Proxy { port, epoch }
        }

        pub fn port(&self) -> u16 {
            self.port
        }

        pub fn stall_existing_connections(&self) {
            self.epoch.fetch_add(1, Ordering::SeqCst);
        }
    }

    async fn forward(
        mut from: OwnedReadHalf,
        mut to: OwnedWriteHalf,
        epoch: Arc<AtomicU64>,
        connection_epoch: u64,
    ) {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let Ok(read) = from.read(&mut buffer).await else {
                return;
            };
            if read == 0 {
                return;
            }
            if epoch.load(Ordering::SeqCst) != connection_epoch {
                // Keeps both halves open without forwarding anything.
                std::future::pending::<()>().await;
            }
            if to.write_all(&buffer[..read]).await.is_err() {
                return;
            }
        }
    }
}
