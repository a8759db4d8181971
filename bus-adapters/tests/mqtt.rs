//! MQTT transport against a real mosquitto broker.

mod common;

use bytes::Bytes;
use common::{filters, next_message, wait_for_generation, wait_for_state, Broker};
use sealbus_bus_adapters::config::{BusConfig, Qos};
use sealbus_bus_adapters::transport::{ConnectionState, Transport, INCOMING_CHANNEL_CAPACITY};
use sealbus_bus_adapters::{AdapterError, DEFAULT_MAX_MESSAGE_SIZE};

fn config_for(broker: &Broker, qos: Qos) -> BusConfig {
    let mut config = BusConfig::from_url(&broker.url()).expect("broker URL parses");
    config.qos = qos;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_after_confirmed_subscribe() {
    let broker = Broker::mosquitto();
    for qos in [Qos::AtMostOnce, Qos::AtLeastOnce, Qos::ExactlyOnce] {
        let config = config_for(&broker, qos);
        let (subscriber, mut received) = Transport::connect(&config).await.unwrap();
        let (publisher, _unused) = Transport::connect(&config).await.unwrap();
        let topic = format!("edgex/events/qos{}", qos.level());

        // subscribe returns only after SUBACK, so the broker already routes the
        // very next publish to the subscriber.
        subscriber
            .subscribe(std::slice::from_ref(&topic))
            .await
            .unwrap();
        publisher
            .publish(&topic, Bytes::from_static(b"reading"))
            .await
            .unwrap();

        let message = next_message(&mut received).await;
        assert_eq!(message.topic, topic);
        assert_eq!(message.payload, Bytes::from_static(b"reading"));
        assert!(!message.duplicate);
        assert_eq!(
            *subscriber.connection_state().borrow(),
            ConnectionState::Connected { generation: 1 }
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_filters_match_mqtt_rules() {
    let broker = Broker::mosquitto();
    let config = config_for(&broker, Qos::AtLeastOnce);
    let (subscriber, mut received) = Transport::connect(&config).await.unwrap();
    let (publisher, _unused) = Transport::connect(&config).await.unwrap();
    subscriber
        .subscribe(&filters(&["w/+/c", "w/x/#"]))
        .await
        .unwrap();

    for topic in ["w/a/c", "w/a/d", "w/x", "w/x/y/z", "w/a/c/d", "end/marker"] {
        publisher
            .publish(topic, Bytes::from(topic.to_owned()))
            .await
            .unwrap();
    }
    subscriber
        .subscribe(&filters(&["end/marker"]))
        .await
        .unwrap();
    publisher
        .publish("end/marker", Bytes::from_static(b"end"))
        .await
        .unwrap();

    let mut topics = Vec::new();
    loop {
        let message = next_message(&mut received).await;
        if message.topic == "end/marker" {
            break;
        }
        assert_eq!(message.payload, Bytes::from(message.topic.clone()));
        topics.push(message.topic);
    }
    topics.sort();
    assert_eq!(topics, vec!["w/a/c", "w/x", "w/x/y/z"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_subscription_is_error() {
    // mosquitto 2.0's ACL file does not deny MQTT 3.1.1 subscriptions, so a
    // minimal broker on 127.0.0.1 returns the SUBACK failure code instead.
    let port = fake_broker::start().await;
    let config = BusConfig::from_url(&format!("mqtt://127.0.0.1:{port}")).unwrap();
    let (transport, _received) = Transport::connect(&config).await.unwrap();

    transport.subscribe(&filters(&["allowed/x"])).await.unwrap();
    let error = transport
        .subscribe(&filters(&["allowed/y", "denied/x"]))
        .await
        .unwrap_err();
    match error {
        AdapterError::SubscribeFailed { filter, .. } => assert_eq!(filter, "denied/x"),
        other => panic!("expected SubscribeFailed, got {other:?}"),
    }
    transport.subscribe(&filters(&["allowed/z"])).await.unwrap();
}

/// A broker that speaks just enough MQTT 3.1.1 to accept a connection and
/// reply to SUBSCRIBE, granting filters under `allowed/` and rejecting others.
mod fake_broker {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    pub async fn start() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream));
            }
        });
        port
    }

    async fn serve(mut stream: TcpStream) {
        while let Some((packet_type, body)) = read_packet(&mut stream).await {
            let reply = match packet_type {
                0x10 => vec![0x20, 0x02, 0x00, 0x00],
                0x82 => suback(&body),
                0xA2 => vec![0xB0, 0x02, body[0], body[1]],
                0xC0 => vec![0xD0, 0x00],
                _ => continue,
            };
            if stream.write_all(&reply).await.is_err() {
                return;
            }
        }
    }

    fn suback(body: &[u8]) -> Vec<u8> {
        let mut codes = Vec::new();
        let mut position = 2;
        while position + 2 <= body.len() {
            let length = usize::from(u16::from_be_bytes([body[position], body[position + 1]]));
            let filter = &body[position + 2..position + 2 + length];
            codes.push(if filter.starts_with(b"allowed/") {
                0x00
            } else {
                0x80
            });
            position += 2 + length + 1;
        }
        let mut reply = vec![0x90, (2 + codes.len()) as u8, body[0], body[1]];
        reply.extend(codes);
        reply
    }

    async fn read_packet(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
        let packet_type = stream.read_u8().await.ok()?;
        let mut remaining = 0usize;
        for shift in [0, 7, 14, 21] {
            let byte = stream.read_u8().await.ok()?;
            remaining |= usize::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0; remaining];
        stream.read_exact(&mut body).await.ok()?;
        Some((packet_type, body))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_rejected_before_sending() {
    let broker = Broker::mosquitto();
    let config = config_for(&broker, Qos::AtLeastOnce);
    assert_eq!(config.max_message_size, DEFAULT_MAX_MESSAGE_SIZE);
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

    // The largest allowed messages arrive intact, and nothing of the rejected one.
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
    assert_eq!(first.payload.len(), fitting);
    assert_eq!(first.payload, Bytes::from(at_limit));
    let second = next_message(&mut received).await;
    assert_eq!(second.payload, Bytes::from(vec![2u8; fitting - 1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery() {
    let broker = Broker::mosquitto();
    let config = config_for(&broker, Qos::AtLeastOnce);
    let (transport, mut received) = Transport::connect(&config).await.unwrap();
    transport
        .subscribe(&filters(&["u/a", "u/b"]))
        .await
        .unwrap();
    transport.unsubscribe(&filters(&["u/a"])).await.unwrap();

    transport
        .publish("u/a", Bytes::from_static(b"gone"))
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
    let mut broker = Broker::mosquitto();
    let config = config_for(&broker, Qos::AtLeastOnce);
    let (subscriber, mut received) = Transport::connect(&config).await.unwrap();
    let (publisher, _unused) = Transport::connect(&config).await.unwrap();
    subscriber
        .subscribe(&filters(&["restart/#"]))
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

    // Connected again means the broker confirmed the restored subscription.
    wait_for_generation(&subscriber, 2).await;
    publisher
        .publish("restart/after", Bytes::from_static(b"2"))
        .await
        .unwrap();
    let message = next_message(&mut received).await;
    assert_eq!(message.topic, "restart/after");
    assert_eq!(message.payload, Bytes::from_static(b"2"));
    wait_for_generation(&publisher, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_publisher_delivers_before_disconnect() {
    let broker = Broker::mosquitto();
    let (subscriber, mut received) = Transport::connect(&config_for(&broker, Qos::AtLeastOnce))
        .await
        .unwrap();
    subscriber
        .subscribe(&filters(&["oneshot/#"]))
        .await
        .unwrap();

    for qos in [Qos::AtMostOnce, Qos::AtLeastOnce, Qos::ExactlyOnce] {
        let topic = format!("oneshot/qos{}", qos.level());
        let (publisher, _unused) = Transport::connect(&config_for(&broker, qos)).await.unwrap();
        for index in 0..20u8 {
            publisher
                .publish(&topic, Bytes::from(vec![index]))
                .await
                .unwrap();
        }
        publisher.disconnect().await.unwrap();
        assert_eq!(
            *publisher.connection_state().borrow(),
            ConnectionState::Disconnected
        );

        for index in 0..20u8 {
            let message = next_message(&mut received).await;
            assert_eq!(message.topic, topic);
            assert_eq!(message.payload, Bytes::from(vec![index]));
        }

        let error = publisher.publish(&topic, Bytes::new()).await.unwrap_err();
        assert!(
            matches!(error, AdapterError::NotConnected { .. }),
            "{error:?}"
        );
        publisher.disconnect().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_transport_closes_incoming_channel() {
    let broker = Broker::mosquitto();
    let (transport, mut received) = Transport::connect(&config_for(&broker, Qos::AtMostOnce))
        .await
        .unwrap();
    drop(transport);
    let closed = tokio::time::timeout(common::ARRIVAL_TIMEOUT, received.recv()).await;
    assert!(matches!(closed, Ok(None)), "channel still open: {closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_fails_without_broker() {
    let mut broker = Broker::mosquitto();
    let config = config_for(&broker, Qos::AtMostOnce);
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
async fn stalled_receiver_does_not_block_subscribe() {
    let broker = Broker::mosquitto();
    let config = config_for(&broker, Qos::AtMostOnce);
    let (subscriber, mut received) = Transport::connect(&config).await.unwrap();
    subscriber.subscribe(&filters(&["flood"])).await.unwrap();

    let total = INCOMING_CHANNEL_CAPACITY + 50;
    let (flooder, _unused) = Transport::connect(&config).await.unwrap();
    for index in 0..total {
        flooder
            .publish("flood", Bytes::from(index.to_string()))
            .await
            .unwrap();
    }
    flooder.disconnect().await.unwrap();

    // The test does not read, so the incoming channel fills up and the event loop blocks
    // on the next message. It must give up on that message after a bounded
    // wait, or the SUBACK below would never be read.
    let filled = async {
        while received.len() < INCOMING_CHANNEL_CAPACITY {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(common::ARRIVAL_TIMEOUT, filled)
        .await
        .expect("incoming channel did not fill up");
    subscriber.subscribe(&filters(&["after"])).await.unwrap();

    let mut flood_messages = 0;
    while let Ok(message) = received.try_recv() {
        assert_eq!(message.topic, "flood");
        flood_messages += 1;
    }
    assert_eq!(flood_messages, INCOMING_CHANNEL_CAPACITY);

    let (publisher, _unused) = Transport::connect(&config).await.unwrap();
    publisher
        .publish("after", Bytes::from_static(b"x"))
        .await
        .unwrap();
    loop {
        let message = next_message(&mut received).await;
        if message.topic == "after" {
            break;
        }
        flood_messages += 1;
    }
    assert!(
        flood_messages < total,
        "no message was dropped: {flood_messages}"
    );
}
