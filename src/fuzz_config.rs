//! The proptest configuration shared by the rock's property tests.

use proptest::test_runner::Config as ProptestConfig;

/// `cases` per property, unless `PROPTEST_CASES` asks for a longer run.
pub fn config(cases: u32) -> ProptestConfig {
    let default = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            default.cases
        } else {
            cases
        },
        failure_persistence: None,
        ..default
    }
}
