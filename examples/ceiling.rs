//! The ingest ceiling: what the HTTP stack alone can do.
//!
//! One `POST /api/event` handler that reads the body, parses it as JSON into a
//! `serde_json::Value` and answers `202 ok`: no enrichment, no storage. Used by
//! `bench/ingest.sh` as the baseline for `tally serve`, built with the same
//! allocator.
//!
//! Usage: `cargo run --release --example ceiling -- 127.0.0.1:0`

use actix_web::{App, HttpResponse, HttpServer, web};

// The same allocator as `tally`, so the ratio compares handlers, not allocators.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn event(body: web::Bytes) -> HttpResponse {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(value) => {
            std::hint::black_box(value);
            HttpResponse::Accepted()
                .content_type("text/plain; charset=utf-8")
                .body("ok")
        }
        Err(_) => HttpResponse::BadRequest().body("invalid JSON"),
    }
}

fn main() -> std::io::Result<()> {
    // The same allocator settings as `tally`.
    tally::alloc::tune();
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_string());
    let listener = std::net::TcpListener::bind(&addr)?;
    let local = listener.local_addr()?;
    eprintln!("listening on http://{local}");
    // Worker count: actix's default, the number of available cores.
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(|| App::new().route("/api/event", web::post().to(event)))
            .listen(listener)?
            .run()
            .await
    })
}
