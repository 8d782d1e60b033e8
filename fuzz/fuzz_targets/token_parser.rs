//! Fuzzes token verification: arbitrary strings as connection and subscription tokens against
//! an HMAC verifier. Properties: no panic, no hang, and nothing verifies without the secret.
#![no_main]

use std::sync::OnceLock;

use kilat_auth::{TokenConfig, Verifier};
use libfuzzer_sys::fuzz_target;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| {
        Verifier::new(&TokenConfig::with_secret("fuzzing-secret-fuzzing-secret-fuzzing"))
            .expect("verifier")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    runtime().block_on(async {
        assert!(verifier().verify_connection(token).await.is_err());
        assert!(verifier().verify_subscription(token, "chat:x").await.is_err());
    });
});
