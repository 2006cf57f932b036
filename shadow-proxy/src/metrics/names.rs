//! Every metric name shadow exports, in one place.

// Rendered from the kernel maps (metrics/kernel.rs).
pub const BLOCK_LATENCY: &str = "shadow_block_io_latency_seconds";
pub const BLOCK_SIZE: &str = "shadow_block_io_size_bytes";
pub const BLOCK_REQUESTS: &str = "shadow_block_io_requests_total";
pub const BLOCK_BYTES: &str = "shadow_block_io_bytes_total";
pub const BLOCK_ERRORS: &str = "shadow_block_io_errors_total";
pub const TCP_SRTT: &str = "shadow_tcp_srtt_seconds";
pub const TCP_CONNECT: &str = "shadow_tcp_connect_latency_seconds";
pub const TCP_LIFETIME: &str = "shadow_tcp_connection_lifetime_seconds";
pub const TCP_CONN_BYTES: &str = "shadow_tcp_connection_bytes";
pub const TCP_TX_BYTES: &str = "shadow_tcp_sent_bytes_total";
pub const TCP_RX_BYTES: &str = "shadow_tcp_received_bytes_total";
pub const TCP_RETRANSMITS: &str = "shadow_tcp_retransmits_total";
pub const TCP_CONNECTIONS: &str = "shadow_tcp_connections_total";
pub const TCP_CONNECT_FAILURES: &str = "shadow_tcp_connect_failures_total";
pub const TCP_CLOSES: &str = "shadow_tcp_closes_total";
pub const TCP_ENDPOINTS: &str = "shadow_tcp_endpoints_tracked";

// Through the `metrics` recorder.
pub const KERNEL_DROPS: &str = "shadow_kernel_drops_total";
/// Errors the eBPF programs' bodies returned, by `program` and `kind`.
pub const KERNEL_PROGRAM_ERRORS: &str = "shadow_kernel_program_errors_total";
pub const KERNEL_EVENTS: &str = "shadow_kernel_events_total";
// Host, cgroup and process utilisation (host/series.rs).
pub const HOST_CPU_UTILISATION: &str = "shadow_host_cpu_utilisation";
pub const HOST_MEMORY_USED: &str = "shadow_host_memory_used_bytes";
pub const HOST_MEMORY_UTILISATION: &str = "shadow_host_memory_utilisation";
pub const HOST_NET_RX: &str = "shadow_host_net_rx_bytes_per_second";
pub const HOST_NET_TX: &str = "shadow_host_net_tx_bytes_per_second";
pub const HOST_DISK_READ: &str = "shadow_host_disk_read_bytes_per_second";
pub const HOST_DISK_WRITE: &str = "shadow_host_disk_write_bytes_per_second";
pub const CGROUP_CPU_CORES: &str = "shadow_cgroup_cpu_cores";
pub const CGROUP_MEMORY: &str = "shadow_cgroup_memory_bytes";
pub const PROCESS_CPU_CORES: &str = "shadow_process_cpu_cores";
pub const PROCESS_RSS: &str = "shadow_process_rss_bytes";
/// Hardware sensors (host/sensors.rs), labelled `sensor="chip/label"`.
pub const SENSOR_TEMPERATURE: &str = "shadow_sensor_temperature_celsius";
pub const SENSOR_VOLTAGE: &str = "shadow_sensor_voltage_volts";
pub const SENSOR_FAN: &str = "shadow_sensor_fan_rpm";
pub const SENSOR_POWER: &str = "shadow_sensor_power_watts";
pub const SENSOR_CURRENT: &str = "shadow_sensor_current_amperes";
pub const HISTORY_REFUSED: &str = "shadow_history_refused_total";
/// History series dropped because they stopped reporting (history.rs).
pub const HISTORY_EVICTED: &str = "shadow_history_evicted_total";
pub const POLL_ERRORS: &str = "shadow_agent_poll_errors_total";
pub const AGENT_RSS: &str = "shadow_agent_rss_bytes";

// Traffic shadowing, per service.
pub const CAPTURE_PACKETS_SEEN: &str = "shadow_capture_packets_seen_total";
pub const CAPTURE_PACKETS_SAMPLED: &str = "shadow_capture_packets_sampled_total";
pub const CAPTURE_TRUNCATED: &str = "shadow_capture_truncated_total";
pub const CAPTURE_LOST: &str = "shadow_capture_lost_samples_total";
pub const FLOWS: &str = "shadow_capture_flows_total";
pub const REQUESTS_PARSED: &str = "shadow_capture_requests_total";
pub const REQUESTS_SAMPLED_OUT: &str = "shadow_capture_requests_sampled_out_total";
pub const REPLAYED: &str = "shadow_replay_requests_total";
pub const REPLAY_DROPS: &str = "shadow_replay_dropped_total";
pub const LATENCY_DELTA: &str = "shadow_replay_latency_delta_seconds";
pub const COVERAGE: &str = "shadow_replay_coverage_ratio";
pub const MIRROR_PERCENT: &str = "shadow_mirror_percent";

// Live traffic per service (and `route`) from the captured exchanges (replay/traffic.rs).
pub const APP_RATE: &str = "shadow_app_requests_per_second";
pub const APP_LATENCY_P50: &str = "shadow_app_latency_p50_milliseconds";
pub const APP_LATENCY_P99: &str = "shadow_app_latency_p99_milliseconds";
pub const APP_ERROR_RATE: &str = "shadow_app_error_ratio";
pub const APP_REQUEST_BYTES: &str = "shadow_app_request_bytes_per_second";
pub const APP_RESPONSE_BYTES: &str = "shadow_app_response_bytes_per_second";

// Failure probability per `scope` (host, service) and `name` (forecast/predict.rs).
pub const FAILURE_PROBABILITY: &str = "shadow_failure_probability";

// Provisioning per `target` and `resource` (provision/mod.rs).
pub const PROVISION_DESIRED: &str = "shadow_provision_desired_capacity";
pub const PROVISION_CURRENT: &str = "shadow_provision_current_capacity";
/// The lead time looked ahead: the backend's measured time-to-ready (P90).
pub const PROVISION_LEAD: &str = "shadow_provision_lead_seconds";
/// Decisions by `result`: unchanged, planned, applied, held, failed.
pub const PROVISION_ACTIONS: &str = "shadow_provision_actions_total";
/// Backend failures by `backend` and `kind` (io, timeout, exit, verify, unsupported).
pub const PROVISION_BACKEND_ERRORS: &str = "shadow_provision_backend_errors_total";
/// Cost per hour of the pool's placement.
pub const PROVISION_COST: &str = "shadow_provision_cost_per_hour";

// Failover per `service` (failover/mod.rs).
/// 0 primary, 1 staged, 2 on the shadow, 3 promoted.
pub const FAILOVER_PHASE: &str = "shadow_failover_phase";
/// Actions by `action` (stage, cutover, rollback, promote, unstage, resume,
/// refused, failed) and `cause` (predicted, primary_failed, manual, none).
pub const FAILOVER_TRANSITIONS: &str = "shadow_failover_transitions_total";
/// How long the kernel took to move new connections, per action.
pub const FAILOVER_CUTOVER_SECONDS: &str = "shadow_failover_cutover_seconds";
/// Consecutive failed checks of the primary and of the shadow (`of`).
pub const FAILOVER_CHECK_FAILURES: &str = "shadow_failover_check_failures";
/// Failed requests during transitions: resets this host sent from the
/// service's primary or shadow port (refused or aborted connections) while
/// the primary was failing, the serving shadow was failing, or within 2 s
/// of a transition.
pub const FAILOVER_FAILED_REQUESTS: &str = "shadow_failover_failed_requests_total";

// Diffing, per service and route.
pub const DIFF_COMPARED: &str = "shadow_diff_compared_total";
pub const DIFF_DIFFERING: &str = "shadow_diff_differing_total";
pub const DIFF_REGRESSIONS: &str = "shadow_diff_regressed_fields";
pub const DIFF_NOISE_COMPARED: &str = "shadow_diff_noise_compared_total";
pub const DIFF_NOISE: &str = "shadow_diff_noise_differing_total";
/// Noise-engine entries dropped for room, `what` = route or field.
pub const DIFF_NOISE_EVICTED: &str = "shadow_diff_noise_evicted_total";
/// Routes past `diff.max_routes` counted under the one overflow route.
pub const DIFF_ROUTES_OVERFLOWED: &str = "shadow_diff_routes_overflowed_total";
/// Bodies whose decoded size passed `diff.max_decoded_bytes`, by coding.
pub const DIFF_DECODE_TRUNCATED: &str = "shadow_diff_decode_truncated_total";

// Forecasting, per forecast metric (forecast/export.rs).
pub const FORECAST: &str = "shadow_forecast";
pub const FORECAST_MODEL_INFO: &str = "shadow_forecast_model_info";
pub const FORECAST_ANOMALY: &str = "shadow_forecast_anomaly";
pub const FORECAST_ANOMALIES: &str = "shadow_forecast_anomalies_total";
pub const FORECAST_TRAININGS: &str = "shadow_forecast_trainings_total";
pub const FORECAST_TRAINING_SECONDS: &str = "shadow_forecast_training_seconds";
pub const FORECAST_REFRESH_SECONDS: &str = "shadow_forecast_refresh_seconds";
