//! The production eval gate: `production` moves only to a version that scored at least as well.

use serde_json::{json, Value};

use super::EvalError;
use crate::store::Store;

/// With the template's eval gate on, `production` only moves to a version whose latest
/// completed eval passes at least as often as the current production version's.
pub async fn check_gate(store: &Store, name: &str, label: &str, version: i64) -> Result<(), EvalError> {
    if label != "production" {
        return Ok(());
    }
    let t = store.get_template(name).await?;
    if !t.eval_gate {
        return Ok(());
    }
    let score =
        |v: i64, e: Option<(i64, f64)>| json!({"version": v, "eval_id": e.map(|x| x.0), "pass_rate": e.map(|x| x.1)});
    let candidate = store.latest_completed_eval(name, version).await?;
    let current = match t.labels.get("production") {
        Some(&v) => Some((v, store.latest_completed_eval(name, v).await?)),
        None => None,
    };
    let production = current.map(|(v, e)| score(v, e)).unwrap_or(Value::Null);
    let Some((cid, cand_rate)) = candidate else {
        return Err(EvalError::Gate {
            message: format!(
                "eval gate: version {version} of '{name}' has no completed eval; run one (POST /api/evals) before moving production"
            ),
            candidate: score(version, None),
            production,
        });
    };
    if let Some((pv, Some((pid, prate)))) = current {
        let (ce, pe) = (store.eval_run(cid).await?, store.eval_run(pid).await?);
        if let Some(why) = different_test_sets(&ce, &pe) {
            return Err(EvalError::Gate {
                message: format!(
                    "eval gate: version {version} (eval {cid}) and production version {pv} (eval {pid}) were scored on different test sets ({why}); run both on the current set"
                ),
                candidate: score(version, candidate),
                production,
            });
        }
        if cand_rate < prate {
            return Err(EvalError::Gate {
                message: format!(
                    "eval gate: version {version} passes {:.1}% (eval {cid}), production version {pv} passes {:.1}% (eval {pid}); it must pass at least as often",
                    cand_rate * 100.0,
                    prate * 100.0
                ),
                candidate: score(version, candidate),
                production,
            });
        }
    }
    Ok(())
}

/// Why two runs cannot be weighed against each other, if they scored different test sets
/// (runs recorded before runs kept their set's hash are taken as they are).
pub fn different_test_sets(a: &api_types::evals::EvalRun, b: &api_types::evals::EvalRun) -> Option<String> {
    match (&a.tests_hash, &b.tests_hash) {
        (Some(x), Some(y)) if x != y => Some(format!(
            "eval {} scored test set {} and eval {} scored test set {}: the test set changed between them",
            a.id,
            &x[..x.len().min(12)],
            b.id,
            &y[..y.len().min(12)]
        )),
        _ => None,
    }
}
