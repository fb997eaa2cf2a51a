//! The console's script modules, style sheet and icon, compiled into the binary. Each is answered with
//! an `ETag` of its content, so a browser revalidates with one cheap request and never runs a
//! stale script after an upgrade.

use std::sync::LazyLock;

use actix_web::http::header::{self, ContentType, ETag, EntityTag, IfNoneMatch};
use actix_web::{HttpRequest, HttpResponse, web};
use sha2::{Digest, Sha256};

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// A script module of the console: `/assets/{name}`, from `assets/console/{name}`.
macro_rules! script {
    ($name:literal) => {
        Asset {
            path: concat!("/assets/", $name),
            content_type: "text/javascript; charset=utf-8",
            body: include_bytes!(concat!("../../assets/console/", $name)),
        }
    };
}

const ASSETS: &[Asset] = &[
    script!("console.js"),
    script!("core.js"),
    script!("public.js"),
    script!("account.js"),
    script!("billing.js"),
    script!("usage.js"),
    script!("admin.js"),
    Asset {
        path: "/assets/console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/console/console.css"),
    },
    Asset {
        path: "/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../assets/console/favicon.svg"),
    },
];

/// Each asset's entity tag: the start of its SHA-256, computed once.
static TAGS: LazyLock<Vec<EntityTag>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| EntityTag::new_strong(hex::encode(&Sha256::digest(asset.body)[..12])))
        .collect()
});

pub fn configure(cfg: &mut web::ServiceConfig) {
    for (index, asset) in ASSETS.iter().enumerate() {
        cfg.route(
            asset.path,
            web::get().to(move |request: HttpRequest| serve(index, request)),
        );
    }
}

async fn serve(index: usize, request: HttpRequest) -> HttpResponse {
    let asset = &ASSETS[index];
    let tag = TAGS[index].clone();
    let unchanged = match request.headers().get(header::IF_NONE_MATCH) {
        Some(_) => match header::Header::parse(&request) {
            Ok(IfNoneMatch::Any) => true,
            Ok(IfNoneMatch::Items(tags)) => tags.iter().any(|sent| sent.weak_eq(&tag)),
            Err(_) => false,
        },
        None => false,
    };
    let mut response = if unchanged {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header(ETag(tag))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    if unchanged {
        response.finish()
    } else {
        response
            .insert_header(ContentType(
                asset.content_type.parse().expect("a MIME type"),
            ))
            .body(asset.body)
    }
}
