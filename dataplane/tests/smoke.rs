use sluice_dataplane::{Dataplane, DataplaneConfig};
#[test]
fn loads() {
    let dp = Dataplane::load(&DataplaneConfig::default()).expect("load");
    let frame = [0u8; 64];
    let out = dp.test_run(&frame, 0).expect("run");
    println!("{out:?} {:?}", dp.counters().unwrap());
}
