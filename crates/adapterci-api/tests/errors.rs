//! Error codes, their HTTP statuses, error bodies that are not ours, and what [`ApiError`] says to people.

use adapterci_api::client::decode_error_body;
use adapterci_api::{ApiClient, ApiError, ErrorCode, ErrorDetail, ErrorPayload};

#[test]
fn every_code_round_trips_through_its_name_and_status() {
    let codes = [
        ("invalid_request", 400),
        ("invalid_pipeline", 400),
        ("unauthorized", 401),
        ("not_found", 404),
        ("conflict", 409),
        ("payload_too_large", 413),
        ("internal", 500),
        ("bad_gateway", 502),
        ("unavailable", 503),
    ];
    for (name, status) in codes {
        let code = ErrorCode::from(name);
        assert!(!matches!(code, ErrorCode::Other(_)), "{name}");
        assert_eq!((code.as_str(), code.http_status()), (name, status));
    }
    assert_eq!(ErrorCode::from("teapot").http_status(), 500);
}

fn check_foreign_body(status: u16, body: &str, expect_code: ErrorCode, expect_message: &str) {
    let payload = decode_error_body(status, body.as_bytes());
    assert_eq!(payload.code, expect_code, "{body}");
    assert_eq!(payload.message, expect_message, "{body}");
}

#[test]
fn error_bodies_that_are_not_ours_still_give_a_code_and_a_message() {
    check_foreign_body(502, "\n<html>Bad Gateway</html>\n", ErrorCode::BadGateway, "<html>Bad Gateway</html>");
    check_foreign_body(404, "", ErrorCode::NotFound, "the server answered http 404 without a message");
    check_foreign_body(
        422,
        "Failed to deserialize the JSON body",
        ErrorCode::InvalidRequest,
        "Failed to deserialize the JSON body",
    );
    check_foreign_body(500, "{\"error\": \"boom\"}", ErrorCode::Internal, "{\"error\": \"boom\"}");
    check_foreign_body(
        404,
        r#"{"error": {"code": "not_found", "message": "no run 7"}}"#,
        ErrorCode::NotFound,
        "no run 7",
    );
}

#[test]
fn details_render_with_what_is_known() {
    let check = |line, column, path: Option<&str>, file, expect: &str| {
        let detail = ErrorDetail { line, column, path: path.map(String::from), message: "bad".into() };
        assert_eq!(detail.render(file), expect);
    };
    check(Some(4), Some(3), Some("train.rank"), Some("p.yaml"), "p.yaml:4:3: train.rank: bad");
    check(Some(4), None, None, None, "4: bad");
    check(None, None, Some(""), Some("p.yaml"), "p.yaml: bad");
    check(None, None, None, None, "bad");
}

#[test]
fn api_errors_say_what_happened() {
    let http = ApiError::Http {
        method: "GET".into(),
        url: "http://x/api/v1/runs/7".into(),
        status: 404,
        error: ErrorPayload { code: ErrorCode::NotFound, message: "run 7 not found".into(), details: vec![] },
    };
    assert_eq!(http.to_string(), "run 7 not found (http 404 not_found)");
    assert!(http.is_not_found());
    assert_eq!(http.hint(), None);
    let unreachable =
        ApiError::Unreachable { server: "http://127.0.0.1:1".into(), reason: "connection refused".into() };
    assert_eq!(unreachable.to_string(), "adapterd is not reachable at http://127.0.0.1:1: connection refused");
    assert!(unreachable.hint().is_some());
}

#[test]
fn bad_server_urls_are_refused() {
    for bad in ["", "127.0.0.1:8080", "ftp://host", "mailto:someone@example.com", "http://"] {
        let err = ApiClient::new(bad).err();
        assert!(matches!(err, Some(ApiError::InvalidUrl { .. })), "{bad:?}: {err:?}");
    }
}

#[test]
fn urls_keep_a_path_prefix_and_encode_segments() {
    let check = |server: &str, segments: &[&str], expect: &str| {
        let client = ApiClient::new(server).unwrap();
        assert_eq!(client.url(segments).as_str(), expect);
    };
    check("http://127.0.0.1:8080", &["api", "v1", "runs"], "http://127.0.0.1:8080/api/v1/runs");
    check("http://host/adapterd/", &["healthz"], "http://host/adapterd/healthz");
    check("http://host", &["api", "v1", "runs", "a b/c"], "http://host/api/v1/runs/a%20b%2Fc");
    assert_eq!(ApiClient::new("http://host:9/").unwrap().server(), "http://host:9");
}
