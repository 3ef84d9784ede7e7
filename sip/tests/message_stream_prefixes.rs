//! TCP may deliver a message cut anywhere: every proper prefix of a valid message must frame as
//! "incomplete", never as garbage (which would close the connection), and the whole as a message.

use sluice_sip::message::{frame_stream, Frame, Limits};

#[test]
fn every_prefix_of_a_message_is_incomplete_not_garbage() {
    let body = "v=0\r\n";
    let message = format!(
        "INVITE sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK74bf9\r\n\
         Call-ID: 3848276298220188511@192.0.2.1\r\n\
         CSeq: 1 INVITE\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let bytes = message.as_bytes();
    for cut in 1..bytes.len() {
        let framed = frame_stream(&bytes[..cut], &Limits::STREAM);
        assert!(
            matches!(framed, Ok(None)),
            "a message cut after {cut} bytes ({:?}) framed as {framed:?}",
            String::from_utf8_lossy(&bytes[..cut])
        );
    }
    assert_eq!(
        frame_stream(bytes, &Limits::STREAM).expect("frames"),
        Some(Frame::Message { len: bytes.len() })
    );
}
