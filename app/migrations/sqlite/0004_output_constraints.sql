-- Output constraints of template versions: whether each eval row's outputs met the
-- version's constraint, and how many rows did. NULL where the version has none.
ALTER TABLE eval_runs ADD COLUMN constraint_met BIGINT;
ALTER TABLE eval_results ADD COLUMN constraint_met BIGINT;
