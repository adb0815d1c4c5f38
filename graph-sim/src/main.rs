//! `graph-sim`: the Meta Graph API simulator as a standalone server.
//! `graph-sim [PORT]` (default 4100); app id/secret from `SIM_APP_ID` / `SIM_APP_SECRET`.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::args()
        .nth(1)
        .map(|p| p.parse())
        .transpose()?
        .unwrap_or(4100);
    let config = graph_sim::SimConfig {
        app_id: std::env::var("SIM_APP_ID").unwrap_or_else(|_| "1234567890".into()),
        app_secret: std::env::var("SIM_APP_SECRET").unwrap_or_else(|_| "local-app-secret".into()),
    };
    let running = graph_sim::start(([127, 0, 0, 1], port).into(), config).await?;
    println!(
        "Graph simulator: META_GRAPH_URL={} (control: {})",
        running.graph_url(),
        running.control_url()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
