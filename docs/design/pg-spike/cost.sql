\timing on
select pg_current_snapshot() as s0 \gset
-- one group commit: 1000 monitors' newest minute (100 of them with 50 class doubles)
explain (analyze, buffers, costs off)
insert into buckets(generation, combo, start, width, weighted_sum, denominator, sum_weights,
  num_nonzero_weights, sum_sq, elements, samples, observations, classes)
select g, '[]', 1700000000 + 1439 * 60, 60, 1, 1, 1, 1, 1, 10, 2, 1,
       case when g <= 100 then array_fill(1::float8, array[50]) end
  from generate_series(1, 1000) g
on conflict (generation, combo, start, width) do update set
  weighted_sum = buckets.weighted_sum + excluded.weighted_sum,
  denominator = buckets.denominator + excluded.denominator,
  sum_weights = buckets.sum_weights + excluded.sum_weights,
  num_nonzero_weights = buckets.num_nonzero_weights + excluded.num_nonzero_weights,
  sum_sq = buckets.sum_sq + excluded.sum_sq, elements = buckets.elements + excluded.elements,
  samples = buckets.samples + excluded.samples,
  observations = buckets.observations + excluded.observations,
  classes = mls_addv(buckets.classes, excluded.classes), xid = pg_current_xact_id();
select pg_current_snapshot() as s1 \gset
\echo == the feed after that commit (previous snapshot s0 = :s0)
explain (analyze, buffers, costs off)
select generation, combo, start, width, weighted_sum, denominator, sum_weights,
       num_nonzero_weights, sum_sq, elements, samples, observations, classes
  from buckets where xid >= pg_snapshot_xmin(:'s0') and not pg_visible_in_snapshot(xid, :'s0');
\echo == an idle poll (nothing committed since s1 = :s1)
explain (analyze, buffers, costs off)
select generation, combo, start, width, weighted_sum, denominator, sum_weights,
       num_nonzero_weights, sum_sq, elements, samples, observations, classes
  from buckets where xid >= pg_snapshot_xmin(:'s1') and not pg_visible_in_snapshot(xid, :'s1');
\echo == the whole load
explain (analyze, buffers, costs off)
select generation, combo, start, width, weighted_sum, denominator, sum_weights,
       num_nonzero_weights, sum_sq, elements, samples, observations, classes from buckets;
