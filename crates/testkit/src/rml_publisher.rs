//! An RTMP publisher driven by rml_rtmp's client (an implementation we did not write), up to
//! an accepted publish. Shared by the ingest tests and the ingest benchmark.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};

/// Handshakes on `s`, connects to app `live` (with `tc_url`, if any) and publishes `key` live.
/// Returns the session and every byte the server sent after the handshake, for a caller that
/// parses them. Panics when the server closes or it takes over 10 s; read timeouts set on `s`
/// only pace the waiting.
pub fn publish(s: &mut TcpStream, key: &str, tc_url: Option<String>) -> (ClientSession, Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 65536];
    let mut read = |s: &mut TcpStream, what: &str| -> Vec<u8> {
        loop {
            assert!(Instant::now() < deadline, "{key}: timed out {what}");
            match s.read(&mut buf) {
                Ok(0) => panic!("{key}: server closed {what}"),
                Ok(n) => return buf[..n].to_vec(),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => panic!("{key}: {e} {what}"),
            }
        }
    };
    let mut hs = Handshake::new(PeerType::Client);
    s.write_all(&hs.generate_outbound_p0_and_p1().unwrap())
        .unwrap();
    let mut from_server = loop {
        let bytes = read(s, "during the handshake");
        match hs.process_bytes(&bytes).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => {
                s.write_all(&response_bytes).unwrap()
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                s.write_all(&response_bytes).unwrap();
                break remaining_bytes;
            }
        }
    };
    let mut cfg = ClientSessionConfig::new();
    cfg.tc_url = tc_url;
    let (mut sess, init) = ClientSession::new(cfg).unwrap();
    let mut q: VecDeque<ClientSessionResult> = init.into();
    q.push_back(sess.request_connection("live".into()).unwrap());
    let mut input = from_server.clone();
    let mut publishing = false;
    while !publishing {
        if !input.is_empty() {
            q.extend(sess.handle_input(&input).unwrap());
            input.clear();
        }
        while let Some(r) = q.pop_front() {
            match r {
                ClientSessionResult::OutboundResponse(p) => s.write_all(&p.bytes).unwrap(),
                ClientSessionResult::RaisedEvent(ClientSessionEvent::ConnectionRequestAccepted) => {
                    q.push_back(
                        sess.request_publishing(key.into(), PublishRequestType::Live)
                            .unwrap(),
                    )
                }
                ClientSessionResult::RaisedEvent(ClientSessionEvent::PublishRequestAccepted) => {
                    publishing = true
                }
                _ => {}
            }
        }
        if !publishing {
            input = read(s, "before the publish was accepted");
            from_server.extend_from_slice(&input);
        }
    }
    (sess, from_server)
}
