//! Torture tests in the spirit of RFC 4475: valid-but-strange messages that must parse and
//! round-trip, and invalid ones with the verdict each must get (answer 400/505 with a specific
//! reason, or drop). The same cases seed the `sip_parse` fuzz corpus (see
//! `write_fuzz_corpus`).

use sluice_sip::message::{parse, Limits, ParseError, Problem, SipMessage};

/// What parsing a case must give.
#[derive(Debug)]
enum Expect {
    /// Parses; the listed substrings (unknown headers, strange values) survive printing.
    Ok(&'static [&'static str]),
    /// Answered with this status and problem.
    Reply(u16, Problem),
    /// Malformed request that is dropped.
    Unanswerable(Problem),
    /// Malformed response, dropped.
    BadResponse(Problem),
    /// Not SIP.
    Garbage,
    /// Over the size limit.
    TooLarge,
    /// Only CRLF.
    Empty,
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    expect: Expect,
}

/// `\n` becomes `\r\n`.
fn crlf(s: &str) -> Vec<u8> {
    s.replace('\n', "\r\n").into_bytes()
}

const CORE: &str = "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds
Max-Forwards: 70
To: Bob <sip:bob@biloxi.example.com>
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774
Call-ID: a84b4c76e66710@pc33.atlanta.example.com
CSeq: 314159 INVITE
";

fn invite_with(headers: &str) -> Vec<u8> {
    crlf(&format!(
        "INVITE sip:bob@biloxi.example.com SIP/2.0\n{headers}Content-Length: 0\n\n"
    ))
}

/// `CORE` without the line starting with `name`.
fn core_without(name: &str) -> String {
    CORE.lines()
        .filter(|l| !l.starts_with(name))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn cases() -> Vec<Case> {
    use Expect::*;
    let long_value = "x".repeat(8000);
    let many_vias: String = (0..60)
        .map(|i| format!("Via: SIP/2.0/UDP p{i}.example.com;branch=z9hG4bK{i}\n"))
        .collect();
    let mut binary_body = crlf(
        "MESSAGE sip:bob@b.example.com SIP/2.0
Via: SIP/2.0/TCP a.example.com;branch=z9hG4bKbin
Max-Forwards: 70
To: <sip:bob@b.example.com>
From: <sip:alice@a.example.com>;tag=1
Call-ID: bin@a
CSeq: 1 MESSAGE
Content-Type: application/octet-stream
Content-Length: 8

",
    );
    binary_body.extend_from_slice(&[0, 0xff, 0xfe, b'\r', b'\n', b'\r', b'\n', 7]);
    let mut nul_header = invite_with(CORE);
    nul_header.splice(43..43, b"X-Nul: a\0b\r\n".iter().copied());
    let mut nul_start = invite_with(CORE);
    nul_start[3] = 0;
    let mut oversize = invite_with(CORE);
    oversize.splice(
        43..43,
        format!("X-Big: {}\r\n", "y".repeat(70_000)).into_bytes(),
    );

    vec![
        // ---- valid but strange ----
        Case { name: "ok_basic_invite", bytes: invite_with(CORE), expect: Ok(&[]) },
        Case {
            name: "ok_wsinv",
            bytes: crlf("INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0
TO :
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n
from   : \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : 150
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    192.0.2.2;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.3
s=-
c=IN IP4 192.0.2.4
t=0 0
m=audio 49217 RTP/AVP 0 12
m=video 3227 RTP/AVP 31
a=rtpmap:31 LPC
"),
            expect: Ok(&[
                "NewFangledHeader: newfangled value continued newfangled value",
                "UnknownHeaderWithUnusualValue: ;;,,;;,;",
            ]),
        },
        Case {
            name: "ok_intmeth",
            bytes: crlf("!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0
Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~
To: \"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7F\" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>
From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"\\\"\"
Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{
CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~
Max-Forwards: 255
extensionHeader-!.%*+_`'~:\u{ef}\u{bb}\u{bf}\u{5927}\u{597d}\u{5d1}
Content-Length: 0

"),
            expect: Ok(&["extensionHeader-!.%*+_`'~: \u{ef}\u{bb}\u{bf}\u{5927}\u{597d}\u{5d1}"]),
        },
        Case {
            name: "ok_escaped_uri",
            bytes: crlf("INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0
To: sip:%75se%72@example.com
From: <sip:I%20have%20spaces@example.net>;tag=938
Max-Forwards: 87
i: esc01.239409asdfakjkn23onasd0-3234
CSeq: 234234 INVITE
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw
C: application/sdp
Contact:
  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>
Content-Length: 0

"),
            expect: Ok(&[]),
        },
        Case {
            name: "ok_compact_forms",
            bytes: crlf("OPTIONS sip:user@example.com SIP/2.0
v: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKcompact;rport
t: <sip:user@example.com>
f: <sip:caller@example.net>;tag=abc
i: compact@192.0.2.9
CSeq: 8 OPTIONS
m: <sip:caller@192.0.2.9>
k: path, outbound
s: compact subject
o: presence
r: <sip:refer-target@example.com>
l: 0

"),
            expect: Ok(&["r: <sip:refer-target@example.com>"]),
        },
        Case {
            name: "ok_combined_values",
            bytes: crlf("BYE sip:bob@192.0.2.4 SIP/2.0
Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bK1, SIP/2.0/UDP p2.example.com;branch=z9hG4bK2,SIP/2.0/TCP [2001:db8::9]:5070;branch=z9hG4bK3;received=192.0.2.7
Route: <sip:p1.example.com;lr>, \"Proxy, Two\" <sip:p2.example.com;lr>
Max-Forwards: 70
To: <sip:bob@example.com>;tag=8321234356
From: <sip:alice@example.net>;tag=9fxced76sl
Call-ID: combined@192.0.2.1
CSeq: 2 BYE
Allow: INVITE, ACK, BYE,CANCEL
X-Multi: a, b, \"c, d\"
Content-Length: 0

"),
            expect: Ok(&["X-Multi: a, b, \"c, d\"", "Allow: INVITE, ACK, BYE,CANCEL"]),
        },
        Case {
            name: "ok_leading_zeros",
            bytes: crlf("REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1:05060;branch=z9hG4bKzeros
Max-Forwards: 0000000000000000000000000000000000000000000000000000000070
To: <sip:u@example.com>
From: <sip:u@example.com>;tag=z
Call-ID: zeros@192.0.2.1
CSeq: 00000000000000000000000000000000000000000000000000000000000000000001 REGISTER
Expires: 0000003600
Content-Length: 0000000000000000000000000000000000000000000000000000000000000000

"),
            expect: Ok(&[]),
        },
        Case {
            name: "ok_long_values",
            bytes: invite_with(&format!("{CORE}{many_vias}X-Long: {long_value}\n")),
            expect: Ok(&["X-Long: xxxxxxxxxx"]),
        },
        Case {
            name: "ok_unusual_uris",
            bytes: crlf("MESSAGE tel:+1-201-555-0123;phone-context=example.com SIP/2.0
Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKurn
Max-Forwards: 70
To: <urn:service:sos>
From: \"\" <sips:[2001:db8::1]:5061>;tag=6
Call-ID: uris
CSeq: 5 MESSAGE
Content-Type: text/plain
Content-Length: 5

hello"),
            expect: Ok(&[]),
        },
        Case {
            name: "ok_header_names_as_written_multipart_binary",
            bytes: [
                crlf("INVITE sip:bob@biloxi.example.com SIP/2.0
Via: SIP/2.0/UDP [2001:DB8::9]:5060;branch=z9hG4bKnames
Max-Forwards: 70
X-oDD-CaSe: Some  Value ;with=params;\"quoted, comma\"
To: Bob <sip:bob@biloxi.example.com>
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774
Call-ID: names@pc33.atlanta.example.com
CSeq: 1 INVITE
MIME-Version: 1.0
user-agent: lower case/1.0
ALLOW: INVITE, ACK
Content-Type: multipart/mixed;boundary=b0
Content-Length: 64

--b0\nContent-Type: application/octet-stream\n\n"),
                vec![0x00, 0xff, 0xfe, 0x80, b'\r', b'\n'],
                b"\r\n--b0--\r\n".to_vec(),
            ]
            .concat(),
            expect: Ok(&[
                "X-oDD-CaSe: Some  Value ;with=params;\"quoted, comma\"\r\n",
                "MIME-Version: 1.0\r\n",
                "user-agent: lower case/1.0\r\n",
                "ALLOW: INVITE, ACK\r\n",
                "Via: SIP/2.0/UDP [2001:DB8::9]:5060;branch=z9hG4bKnames\r\n",
            ]),
        },
        Case {
            name: "ok_extension_method_ipv6_uri",
            bytes: crlf("XFOO sip:x@[2001:db8::77]:5070;user=phone SIP/2.0
Via: SIP/2.0/UDP [2001:db8::5]:5060;branch=z9hG4bKxfoo
Max-Forwards: 70
To: <sip:x@[2001:db8::77]:5070;user=phone>
From: <sip:peer@[2001:db8::5]>;tag=v6
Call-ID: xfoo@[2001:db8::5]
CSeq: 3 XFOO
Content-Length: 0

"),
            expect: Ok(&["XFOO sip:x@[2001:db8::77]:5070;user=phone SIP/2.0\r\n"]),
        },
        Case {
            name: "ok_response_custom_reason_binary_body",
            bytes: [
                crlf("SIP/2.0 180 Ringing, Softly (please hold)
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKrr
To: <sip:bob@example.com>;tag=bt
From: <sip:a@example.com>;tag=1
Call-ID: reason
CSeq: 1 INVITE
X-Vendor-Thing: KeepMe  As Is
Content-Type: application/octet-stream
Content-Length: 4

"),
                vec![0xde, 0xad, 0x00, 0xff],
            ]
            .concat(),
            expect: Ok(&["SIP/2.0 180 Ringing, Softly (please hold)\r\n"]),
        },
        Case {
            name: "ok_lowercase_method_is_extension",
            bytes: crlf("invite sip:bob@example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKlower
To: <sip:bob@example.com>
From: <sip:a@example.com>;tag=1
Call-ID: lower
CSeq: 1 invite
Content-Length: 0

"),
            expect: Ok(&[]),
        },
        Case {
            name: "ok_leading_crlf_no_content_length_binary",
            bytes: [&b"\r\n\r\n"[..], &binary_body].concat(),
            expect: Ok(&[]),
        },
        Case {
            name: "ok_body_longer_than_content_length",
            bytes: {
                let mut b = invite_with(CORE);
                b.extend_from_slice(b"trailing junk after the message is cut off on UDP");
                b
            },
            expect: Ok(&[]),
        },
        Case {
            name: "ok_response_unknown_reason",
            bytes: crlf("SIP/2.0 199 Early Dialog Terminated, really!
Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp1, SIP/2.0/UDP pc33.example.com;branch=z9hG4bKu1
To: <sip:bob@example.com>;tag=x
From: <sip:alice@example.net>;tag=y
Call-ID: resp
CSeq: 1 INVITE
Record-Route: <sip:proxy.example.com;lr>
X-Vendor-Thing: kept as is ;=,
Content-Length: 0

"),
            expect: Ok(&["SIP/2.0 199 Early Dialog Terminated, really!", "X-Vendor-Thing: kept as is ;=,"]),
        },
        Case {
            name: "ok_no_empty_line",
            bytes: crlf(&format!("OPTIONS sip:x@example.com SIP/2.0\n{}", CORE.replace("INVITE", "OPTIONS"))),
            expect: Ok(&[]),
        },
        // ---- invalid, answered ----
        Case {
            name: "bad_content_length_too_large",
            bytes: crlf(&format!("INVITE sip:bob@biloxi.example.com SIP/2.0\n{CORE}Content-Length: 9999\n\nv=0\n")),
            expect: Reply(400, Problem::BodyTruncated),
        },
        Case {
            name: "bad_content_length_negative",
            bytes: crlf(&format!("INVITE sip:bob@biloxi.example.com SIP/2.0\n{CORE}Content-Length: -999\n\n")),
            expect: Reply(400, Problem::BadHeader("Content-Length")),
        },
        Case {
            name: "bad_content_length_double",
            bytes: crlf(&format!("INVITE sip:bob@biloxi.example.com SIP/2.0\n{CORE}l: 4\nContent-Length: 0\n\nv=0\n")),
            expect: Reply(400, Problem::DuplicateHeader("Content-Length")),
        },
        Case {
            name: "bad_missing_call_id",
            bytes: invite_with(&core_without("Call-ID")),
            expect: Reply(400, Problem::MissingHeader("Call-ID")),
        },
        Case {
            name: "bad_missing_cseq",
            bytes: invite_with(&core_without("CSeq")),
            expect: Reply(400, Problem::MissingHeader("CSeq")),
        },
        Case {
            name: "bad_missing_from",
            bytes: invite_with(&core_without("From")),
            expect: Reply(400, Problem::MissingHeader("From")),
        },
        Case {
            name: "bad_missing_to",
            bytes: invite_with(&core_without("To")),
            expect: Reply(400, Problem::MissingHeader("To")),
        },
        Case {
            name: "bad_missing_via",
            bytes: invite_with(&core_without("Via")),
            expect: Unanswerable(Problem::MissingHeader("Via")),
        },
        Case {
            name: "bad_cseq_method_mismatch",
            bytes: invite_with(&CORE.replace("314159 INVITE", "314159 REGISTER")),
            expect: Reply(400, Problem::CSeqMethodMismatch),
        },
        Case {
            name: "bad_cseq_overlarge",
            bytes: invite_with(&CORE.replace("314159 INVITE", "36893488147419103232 INVITE")),
            expect: Reply(400, Problem::BadHeader("CSeq")),
        },
        Case {
            name: "bad_request_line_extra_spaces",
            bytes: [&b"INVITE  sip:bob@biloxi.example.com  SIP/2.0\r\n"[..], &invite_with(CORE)[43..]].concat(),
            expect: Reply(400, Problem::BadRequestLine),
        },
        Case {
            name: "bad_request_uri_angle_brackets",
            bytes: [&b"INVITE <sip:bob@biloxi.example.com> SIP/2.0\r\n"[..], &invite_with(CORE)[43..]].concat(),
            expect: Reply(400, Problem::BadRequestUri),
        },
        Case {
            name: "bad_version_7",
            bytes: [&b"INVITE sip:bob@biloxi.example.com SIP/7.0\r\n"[..], &invite_with(CORE)[43..]].concat(),
            expect: Reply(505, Problem::VersionNotSupported),
        },
        Case {
            name: "bad_max_forwards_not_numeric",
            bytes: invite_with(&CORE.replace("Max-Forwards: 70", "Max-Forwards: seventy")),
            expect: Reply(400, Problem::BadHeader("Max-Forwards")),
        },
        Case {
            name: "bad_max_forwards_too_big",
            bytes: invite_with(&CORE.replace("Max-Forwards: 70", "Max-Forwards: 300")),
            expect: Reply(400, Problem::BadHeader("Max-Forwards")),
        },
        Case {
            name: "bad_nul_in_header",
            bytes: nul_header,
            expect: Reply(400, Problem::BadHeaderLine),
        },
        Case {
            name: "bad_header_without_colon",
            bytes: invite_with(&format!("{CORE}This line has no colon\n")),
            expect: Reply(400, Problem::BadHeaderLine),
        },
        Case {
            name: "bad_double_to",
            bytes: invite_with(&format!("{CORE}To: <sip:other@example.com>\n")),
            expect: Reply(400, Problem::DuplicateHeader("To")),
        },
        Case {
            name: "bad_to_unterminated",
            bytes: invite_with(&CORE.replace("To: Bob <sip:bob@biloxi.example.com>", "To: Bob <sip:bob@biloxi.example.com")),
            expect: Reply(400, Problem::BadHeader("To")),
        },
        Case {
            name: "bad_second_via",
            bytes: invite_with(&format!("{CORE}Via: SIP/2.0/UDP\n")),
            expect: Reply(400, Problem::BadHeader("Via")),
        },
        // ---- invalid, dropped ----
        Case {
            name: "drop_bad_top_via",
            bytes: invite_with(&CORE.replace("SIP/2.0/UDP pc33.atlanta.example.com", "SIP/2.0/UDP [bad")),
            expect: Unanswerable(Problem::BadHeader("Via")),
        },
        Case {
            name: "drop_malformed_ack",
            bytes: crlf(&format!("ACK sip:bob@biloxi.example.com SIP/2.0\n{}Content-Length: 0\n\n", core_without("Call-ID").replace("INVITE", "ACK"))),
            expect: Unanswerable(Problem::MissingHeader("Call-ID")),
        },
        Case { name: "drop_nul_in_start_line", bytes: nul_start, expect: Garbage },
        Case {
            name: "drop_binary_garbage",
            bytes: vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0xde, 0xad],
            expect: Garbage,
        },
        Case { name: "drop_http", bytes: crlf("GET / HTTP/1.1\nHost: example.com\n\n"), expect: Garbage },
        Case { name: "drop_oversize", bytes: oversize, expect: TooLarge },
        Case { name: "drop_keepalive", bytes: b"\r\n\r\n".to_vec(), expect: Empty },
        Case {
            name: "drop_response_missing_cseq",
            bytes: crlf("SIP/2.0 200 OK
Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bKu1
To: <sip:bob@example.com>;tag=x
From: <sip:alice@example.net>;tag=y
Call-ID: resp
Content-Length: 0

"),
            expect: BadResponse(Problem::MissingHeader("CSeq")),
        },
        Case {
            name: "drop_response_bad_status",
            bytes: crlf("SIP/2.0 2000 OK
Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bKu1
To: <sip:bob@example.com>;tag=x
From: <sip:alice@example.net>;tag=y
Call-ID: resp
CSeq: 1 INVITE
Content-Length: 0

"),
            expect: BadResponse(Problem::BadStatusLine),
        },
        Case {
            name: "drop_response_truncated_body",
            bytes: crlf("SIP/2.0 200 OK
Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bKu1
To: <sip:bob@example.com>;tag=x
From: <sip:alice@example.net>;tag=y
Call-ID: resp
CSeq: 1 INVITE
Content-Length: 100

v=0
"),
            expect: BadResponse(Problem::BodyTruncated),
        },
    ]
}

fn check_round_trip(msg: &SipMessage, name: &str) {
    let printed = msg.to_bytes();
    let again = parse(
        &printed,
        &Limits {
            max_message_len: usize::MAX,
            ..Limits::UDP
        },
    )
    .unwrap_or_else(|e| panic!("{name}: printed message does not reparse: {e}"));
    assert_eq!(&again, msg, "{name}: reparse differs");
    assert_eq!(again.to_bytes(), printed, "{name}: printing is not stable");
}

#[test]
fn torture_cases_get_their_verdicts() {
    for case in cases() {
        let name = case.name;
        let result = parse(&case.bytes, &Limits::UDP);
        match (&case.expect, &result) {
            (Expect::Ok(survivors), Ok(msg)) => {
                check_round_trip(msg, name);
                let printed = String::from_utf8_lossy(&msg.to_bytes()).into_owned();
                for s in *survivors {
                    assert!(printed.contains(s), "{name}: {s:?} lost in\n{printed}");
                }
            }
            (Expect::Reply(status, problem), Err(e @ ParseError::BadRequest(bad))) => {
                assert_eq!(&bad.problem, problem, "{name}");
                let resp = e.response().expect("answerable");
                assert_eq!(resp.status, *status, "{name}");
                assert_eq!(resp.reason, problem.to_string(), "{name}");
                // The response is a SIP response; it is only as complete as the request was.
                match parse(&resp.to_bytes(), &Limits::UDP) {
                    Result::Ok(SipMessage::Response(_)) => {}
                    Err(ParseError::BadResponse(
                        Problem::MissingHeader(_)
                        | Problem::DuplicateHeader(_)
                        | Problem::BadHeader(_)
                        | Problem::BadHeaderLine,
                    )) => {}
                    other => panic!("{name}: error response reparses as {other:?}"),
                }
            }
            (Expect::Unanswerable(p), Err(ParseError::Unanswerable(q))) => {
                assert_eq!(p, q, "{name}")
            }
            (Expect::BadResponse(p), Err(ParseError::BadResponse(q))) => {
                assert_eq!(p, q, "{name}")
            }
            (Expect::Garbage, Err(ParseError::Garbage(_)))
            | (Expect::TooLarge, Err(ParseError::TooLarge { .. }))
            | (Expect::Empty, Err(ParseError::Empty)) => {}
            (expect, got) => panic!("{name}: expected {expect:?}, got {got:?}"),
        }
        if let Err(e) = &result {
            if !matches!(case.expect, Expect::Reply(..)) {
                assert!(
                    e.response().is_none(),
                    "{name}: dropped input must not be answered"
                );
            }
        }
    }
}

#[test]
fn error_response_copies_dialog_headers() {
    let bytes = invite_with(&core_without("CSeq"));
    let err = parse(&bytes, &Limits::UDP).unwrap_err();
    let resp = err.response().unwrap();
    let text = String::from_utf8(resp.to_bytes()).unwrap();
    assert!(
        text.starts_with("SIP/2.0 400 Missing CSeq header field\r\n"),
        "{text}"
    );
    assert!(text.contains("Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n"));
    assert!(text.contains("Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"));
    assert!(text.contains("From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"));
    assert!(text.contains("To: Bob <sip:bob@biloxi.example.com>\r\n"));
    assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
}

#[test]
fn compact_and_folded_headers_are_typed() {
    use rsip::prelude::HeadersExt;
    let case = cases().into_iter().find(|c| c.name == "ok_wsinv").unwrap();
    let SipMessage::Request(req) = parse(&case.bytes, &Limits::UDP).unwrap() else {
        panic!("request expected")
    };
    assert_eq!(req.method.as_str(), "INVITE");
    assert_eq!(
        req.call_id_header().unwrap().to_string(),
        "Call-ID: wsinv.ndaksdj@192.0.2.1"
    );
    // Via and v: combined values are split, in order.
    let vias: Vec<String> = req
        .headers
        .iter()
        .filter_map(|h| match h {
            rsip::Header::Via(v) => Some(v.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(vias.len(), 3, "{vias:?}");
    assert!(vias[1].contains("spindle.example.com"));
    assert_eq!(req.body.len(), 150);
    assert!(req.body.starts_with(b"v=0\r\n"));
}

#[test]
fn body_is_cut_to_content_length_and_kept_binary() {
    let case = cases()
        .into_iter()
        .find(|c| c.name == "ok_leading_crlf_no_content_length_binary")
        .unwrap();
    let msg = parse(&case.bytes, &Limits::UDP).unwrap();
    let SipMessage::Request(req) = &msg else {
        panic!()
    };
    assert_eq!(req.body, [0, 0xff, 0xfe, b'\r', b'\n', b'\r', b'\n', 7]);
    let case = cases()
        .into_iter()
        .find(|c| c.name == "ok_body_longer_than_content_length")
        .unwrap();
    let SipMessage::Request(req) = parse(&case.bytes, &Limits::UDP).unwrap() else {
        panic!()
    };
    assert!(req.body.is_empty());
}

#[test]
fn extension_methods_are_not_rsip_methods() {
    let case = cases()
        .into_iter()
        .find(|c| c.name == "ok_intmeth")
        .unwrap();
    let SipMessage::Request(req) = parse(&case.bytes, &Limits::UDP).unwrap() else {
        panic!()
    };
    assert_eq!(req.method.rsip(), None);
    assert!(req.to_rsip().is_none());
    let basic = cases()
        .into_iter()
        .find(|c| c.name == "ok_basic_invite")
        .unwrap();
    let SipMessage::Request(req) = parse(&basic.bytes, &Limits::UDP).unwrap() else {
        panic!()
    };
    assert_eq!(req.method.rsip(), Some(rsip::Method::Invite));
    assert!(req.to_rsip().is_some());
}

/// A message written with the RFC's header names and no folding, compact forms or combined
/// values prints back byte for byte: what the transaction layer and the proxy send.
#[test]
fn canonical_messages_print_back_byte_for_byte() {
    for name in [
        "ok_header_names_as_written_multipart_binary",
        "ok_extension_method_ipv6_uri",
        "ok_response_custom_reason_binary_body",
        "ok_basic_invite",
    ] {
        let case = cases().into_iter().find(|c| c.name == name).unwrap();
        let msg = parse(&case.bytes, &Limits::UDP).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&msg.to_bytes()),
            String::from_utf8_lossy(&case.bytes),
            "{name}"
        );
        assert_eq!(msg.to_bytes(), case.bytes, "{name}");
    }
}

/// Writes every case into the fuzz corpus. Run with
/// `cargo test -p sluice-sip --test message_torture -- --ignored write_fuzz_corpus`.
#[test]
#[ignore]
fn write_fuzz_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/sip_parse");
    std::fs::create_dir_all(&dir).unwrap();
    for case in cases() {
        if case.bytes.len() <= 16 * 1024 {
            std::fs::write(dir.join(format!("{}.sip", case.name)), &case.bytes).unwrap();
        }
    }
}
