//! Misusing `#[derive(Actor)]` or `#[handlers]` fails to compile with an error that points at
//! the offending token and says what is accepted (cases and expected messages in `tests/ui/`).

#[test]
fn macro_misuse_is_a_compile_error() {
    // Relative to this crate's manifest (`tests/Cargo.toml`): the cases are in `tests/ui/`
    // of the workspace. trybuild passes silently when a glob matches nothing.
    trybuild::TestCases::new().compile_fail("ui/*.rs");
}
