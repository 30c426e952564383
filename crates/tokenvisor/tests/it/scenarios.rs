//! The shared scenarios (tokenvisor-test-support's `scenario`) on tokio's paused clock with
//! the runtime's in-memory `FakeTransport`: hours of virtual time in milliseconds. The same
//! scenarios run over HTTP against tokenvisor-idp (`tests/it/scenarios.rs`) and against
//! oidc-provider behind nginx (the real suite).

use tokenvisor_test_support::scenario::{Driver, FakeEndpoint};

tokenvisor_test_support::scenario_tests! {
    #[tokio::test(start_paused = true)]
    Driver::start(FakeEndpoint::new()).await;
    waf_blip_recovers_without_unauthenticated,
    outage_across_expiry_degrades_then_recovers,
    give_up_ceiling_ends_in_unauthenticated_and_silence,
    invalid_grant_is_final_and_silent,
    a_short_hold_is_waited_out,
    retry_after_is_a_floor_for_the_next_attempt,
    a_long_hold_holds_every_workload_of_the_endpoint,
    concurrent_force_refreshes_make_one_request,
    new_credentials_recover_an_unauthenticated_workload,
    force_refresh_all_refreshes_every_workload_once,
}
