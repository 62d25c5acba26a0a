//! The documents' generated parts are their generators' output: the performance summary plot
//! (docs/performance-summary.svg, from docs/performance-summary.csv by
//! docs/make-summary-plot.py), so the plot in docs/performance.md shows the recorded figures.

#[test]
fn the_performance_summary_plot_is_its_generators_output() {
    let root = env!("CARGO_MANIFEST_DIR");
    let o = std::process::Command::new("python3")
        .arg(format!("{root}/docs/make-summary-plot.py"))
        .output()
        .expect("python3");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let committed =
        std::fs::read_to_string(format!("{root}/docs/performance-summary.svg")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        committed,
        "docs/performance-summary.svg is stale: run python3 docs/make-summary-plot.py > docs/performance-summary.svg"
    );
    // Every figure of the CSV is drawn.
    let csv = std::fs::read_to_string(format!("{root}/docs/performance-summary.csv")).unwrap();
    let figures = csv.lines().skip(1).filter(|l| !l.trim().is_empty()).count();
    assert!(figures >= 15, "{figures} figures");
    assert_eq!(committed.matches("<rect x=").count(), figures);
}
