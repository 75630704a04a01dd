//! Rebuild when a migration changes: `sqlx::migrate!` embeds the files at compile time, and
//! cargo cannot see that on its own.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
