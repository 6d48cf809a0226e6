//! What the fake metadata service answers. One function per cloud; add paths to
//! the `match` tables. Every value here is obviously fake.
use crate::http::{Request, Response};

/// The only IMDSv2 token the fake service issues and accepts.
pub const AWS_TOKEN: &str = "AQAEAMetaguardFakeImdsV2Token-NOT-REAL==";
pub const AWS_INSTANCE_ID: &str = "i-0123456789abcdef0";
pub const AWS_AMI_ID: &str = "ami-0123456789abcdef0";
pub const AWS_REGION: &str = "us-east-1";
pub const AWS_AZ: &str = "us-east-1a";
pub const AWS_ROLE: &str = "metaguard-test-role";
pub const AWS_ACCESS_KEY_ID: &str = "ASIAFAKEMETAGUARD000";
pub const AWS_SECRET_ACCESS_KEY: &str = "fake/secret/access/key/metaguard/NOT/REAL";
pub const GCE_INSTANCE_ID: &str = "1234567890123456789";
pub const GCE_ZONE: &str = "projects/123456789012/zones/us-central1-a";
pub const GCE_ACCESS_TOKEN: &str = "ya29.fake-metaguard-gce-token-NOT-REAL";
pub const AZURE_ACCESS_TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJmYWtlIjoibWV0YWd1YXJkIn0.fake.NOT-REAL";
/// The WireServer certificate payload (base64 of nothing real).
pub const AZURE_CERTIFICATE_DATA: &str = "MIIFakeMetaguardPkcs7CertificatePayloadNOTREAL==";
pub const AWS_SESSION_TOKEN: &str = "FAKE-SESSION-TOKEN-metaguard-NOT-REAL";

/// The answer for one request; the address it arrived on does not matter.
pub fn respond(req: &Request) -> Response {
    let path = req.path();
    if path.starts_with("/latest/") {
        aws(req)
    } else if path.starts_with("/computeMetadata/") {
        gce(req).with_header("Metadata-Flavor", "Google")
    } else if path.starts_with("/metadata/") {
        azure(req)
    } else if path == "/machine/" || path == "/machine" {
        wireserver(req)
    } else {
        Response::text(404, "Not Found")
    }
}

fn is_get(req: &Request) -> bool {
    req.method == "GET" || req.method == "HEAD"
}

fn aws(req: &Request) -> Response {
    if req.path() == "/latest/api/token" {
        return aws_token(req);
    }
    if !is_get(req) {
        return Response::text(405, "Method Not Allowed");
    }
    // IMDSv1 (no token) and IMDSv2 (valid token) are both accepted.
    if req
        .header("x-aws-ec2-metadata-token")
        .is_some_and(|t| t != AWS_TOKEN)
    {
        return Response::text(401, "Unauthorized");
    }
    match aws_body(req.path()) {
        Some(body) if body.starts_with('{') => Response::json(200, body),
        Some(body) => Response::text(200, body),
        None => Response::text(404, "Not Found"),
    }
}

fn aws_token(req: &Request) -> Response {
    if req.method != "PUT" {
        return Response::text(405, "Method Not Allowed");
    }
    let ttl = req
        .header("x-aws-ec2-metadata-token-ttl-seconds")
        .and_then(|v| v.parse::<u32>().ok());
    match ttl {
        Some(ttl) if (1..=21600).contains(&ttl) => Response::text(200, AWS_TOKEN)
            .with_header("X-aws-ec2-metadata-token-ttl-seconds", &ttl.to_string()),
        _ => Response::text(400, "Bad Request"),
    }
}

fn aws_body(path: &str) -> Option<String> {
    let body = match path {
        "/latest/meta-data" | "/latest/meta-data/" => {
            "ami-id\nhostname\niam/\ninstance-id\ninstance-type\nlocal-ipv4\nplacement/".to_string()
        }
        "/latest/meta-data/instance-id" => AWS_INSTANCE_ID.to_string(),
        "/latest/meta-data/ami-id" => AWS_AMI_ID.to_string(),
        "/latest/meta-data/instance-type" => "t3.micro".to_string(),
        "/latest/meta-data/hostname" => "ip-192-0-2-2.ec2.internal".to_string(),
        "/latest/meta-data/local-ipv4" => "198.51.100.2".to_string(),
        "/latest/meta-data/placement/" => "availability-zone\nregion".to_string(),
        "/latest/meta-data/placement/availability-zone" => AWS_AZ.to_string(),
        "/latest/meta-data/placement/region" => AWS_REGION.to_string(),
        "/latest/meta-data/iam/" => "info\nsecurity-credentials/".to_string(),
        "/latest/meta-data/iam/security-credentials"
        | "/latest/meta-data/iam/security-credentials/" => AWS_ROLE.to_string(),
        p if p == format!("/latest/meta-data/iam/security-credentials/{AWS_ROLE}") => {
            aws_credentials()
        }
        "/latest/dynamic/instance-identity/document" => aws_identity_document(),
        _ => return None,
    };
    Some(body)
}

fn aws_credentials() -> String {
    format!(
        r#"{{
  "Code" : "Success",
  "LastUpdated" : "2024-01-01T00:00:00Z",
  "Type" : "AWS-HMAC",
  "AccessKeyId" : "{AWS_ACCESS_KEY_ID}",
  "SecretAccessKey" : "{AWS_SECRET_ACCESS_KEY}",
  "Token" : "{AWS_SESSION_TOKEN}",
  "Expiration" : "2099-01-01T00:00:00Z"
}}"#
    )
}

fn aws_identity_document() -> String {
    format!(
        r#"{{
  "accountId" : "123456789012",
  "architecture" : "x86_64",
  "availabilityZone" : "{AWS_AZ}",
  "imageId" : "{AWS_AMI_ID}",
  "instanceId" : "{AWS_INSTANCE_ID}",
  "instanceType" : "t3.micro",
  "privateIp" : "198.51.100.2",
  "region" : "{AWS_REGION}",
  "version" : "2017-09-30"
}}"#
    )
}

fn gce(req: &Request) -> Response {
    if req.header("metadata-flavor") != Some("Google") {
        return Response::text(403, "Missing Metadata-Flavor:Google header.");
    }
    if !is_get(req) {
        return Response::text(405, "Method Not Allowed");
    }
    match req.path() {
        "/computeMetadata/v1/instance/id" => Response::text(200, GCE_INSTANCE_ID),
        "/computeMetadata/v1/instance/zone" => Response::text(200, GCE_ZONE),
        "/computeMetadata/v1/instance/service-accounts/default/token" => Response::json(
            200,
            format!(
                r#"{{"access_token":"{GCE_ACCESS_TOKEN}","expires_in":3599,"token_type":"Bearer"}}"#
            ),
        ),
        _ => Response::text(404, "Not Found"),
    }
}

fn azure(req: &Request) -> Response {
    if !req
        .header("metadata")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return Response::json(
            400,
            r#"{"error":"Bad request. Required metadata header not specified"}"#,
        );
    }
    if !req
        .query()
        .split('&')
        .any(|kv| kv.starts_with("api-version="))
    {
        return Response::json(
            400,
            r#"{"error":"Bad request. api-version was not specified"}"#,
        );
    }
    match req.path() {
        "/metadata/instance" => Response::json(200, azure_instance()),
        "/metadata/identity/oauth2/token" => Response::json(200, azure_token()),
        _ => Response::json(404, r#"{"error":"Not found"}"#),
    }
}

/// Azure WireServer: the certificates of the goal state.
fn wireserver(req: &Request) -> Response {
    if !is_get(req) || !req.query().split('&').any(|kv| kv == "comp=certificates") {
        return Response::text(400, "Bad Request");
    }
    Response::new(
        200,
        "text/xml; charset=utf-8",
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<CertificateFile><Version>2012-11-30</Version><Incarnation>1</Incarnation><Format>Pkcs7BlobWithPfxContents</Format><Data>{AZURE_CERTIFICATE_DATA}</Data></CertificateFile>"
        ),
    )
}

fn azure_instance() -> &'static str {
    r#"{"compute":{"azEnvironment":"AzurePublicCloud","location":"westeurope","name":"metaguard-test-vm","vmId":"00000000-0000-0000-0000-000000000000","vmSize":"Standard_B1s"},"network":{"interface":[{"ipv4":{"ipAddress":[{"privateIpAddress":"198.51.100.2","publicIpAddress":""}]}}]}}"#
}

fn azure_token() -> String {
    format!(
        r#"{{"access_token":"{AZURE_ACCESS_TOKEN}","client_id":"00000000-0000-0000-0000-000000000000","expires_in":"86399","expires_on":"4070908800","ext_expires_in":"86399","not_before":"1700000000","resource":"https://management.azure.com/","token_type":"Bearer"}}"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: method.into(),
            target: target.into(),
            version: "HTTP/1.1".into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: Vec::new(),
            chunked: false,
        }
    }

    fn get(target: &str, headers: &[(&str, &str)]) -> Response {
        respond(&req("GET", target, headers))
    }

    #[test]
    fn aws_v1_v2_and_token_rules() {
        assert_eq!(
            get("/latest/meta-data/instance-id", &[]).body,
            AWS_INSTANCE_ID.as_bytes()
        );
        let tok = respond(&req(
            "PUT",
            "/latest/api/token",
            &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
        ));
        assert_eq!(
            (tok.status, tok.body.as_slice()),
            (200, AWS_TOKEN.as_bytes())
        );
        assert_eq!(respond(&req("PUT", "/latest/api/token", &[])).status, 400);
        assert_eq!(
            get(
                "/latest/meta-data/instance-id",
                &[("X-aws-ec2-metadata-token", AWS_TOKEN)]
            )
            .status,
            200
        );
        assert_eq!(
            get(
                "/latest/meta-data/instance-id",
                &[("X-aws-ec2-metadata-token", "bad")]
            )
            .status,
            401
        );
        assert_eq!(get("/latest/meta-data/nope", &[]).status, 404);
        let creds = get(
            "/latest/meta-data/iam/security-credentials/metaguard-test-role",
            &[],
        );
        let body = String::from_utf8(creds.body).unwrap();
        for key in [
            "Code",
            "LastUpdated",
            "Type",
            "AccessKeyId",
            "SecretAccessKey",
            "Token",
            "Expiration",
        ] {
            assert!(body.contains(&format!("\"{key}\"")), "{key} missing");
        }
    }

    #[test]
    fn gce_and_azure_require_their_headers() {
        assert_eq!(get("/computeMetadata/v1/instance/id", &[]).status, 403);
        let ok = get(
            "/computeMetadata/v1/instance/id",
            &[("Metadata-Flavor", "Google")],
        );
        assert_eq!(
            (ok.status, ok.body.as_slice()),
            (200, GCE_INSTANCE_ID.as_bytes())
        );
        assert!(ok
            .headers
            .contains(&("Metadata-Flavor".into(), "Google".into())));
        assert_eq!(
            get("/metadata/instance?api-version=2021-02-01", &[]).status,
            400
        );
        let tok = get(
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x",
            &[("Metadata", "true")],
        );
        assert_eq!(tok.status, 200);
        assert!(String::from_utf8(tok.body)
            .unwrap()
            .contains("access_token"));
    }
}
