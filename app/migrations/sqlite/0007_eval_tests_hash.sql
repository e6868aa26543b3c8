-- Which test set an eval scored (a hash of its rows): runs over different sets are not
-- compared, and the eval gate does not weigh them against each other.
ALTER TABLE eval_runs ADD COLUMN tests_hash TEXT;
