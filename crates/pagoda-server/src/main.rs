//! The `pagoda` binary: everything is in the library.

fn main() -> anyhow::Result<()> {
    pagoda_server::run()
}
