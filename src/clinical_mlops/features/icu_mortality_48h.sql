-- Features for icu_mortality_48h: one row per cohort stay, only the 17 declared features.
--
-- Inputs (registered by the engine, DuckDB or Spark SQL):
--   cohort(stay_id, age, sex, diagnosis_icd10, window_start, window_end)
--   event_features(stay_id, gcs, map, ..., ventilation)  -- generated from the task spec
--
-- The 14 event features (lowest GCS, MAP and SpO2, highest heart rate, lactate, ...) come
-- from event_features, which the engine generates from the spec's declarations (variable,
-- window, valid range, aggregation): only events inside [window_start, window_end) count, so
-- nothing charted after the prediction time can reach a feature, and values outside the
-- valid range are device artefacts and are ignored. This file adds the admission
-- characteristics. Portable SQL only: it runs unchanged on DuckDB and Spark SQL.

SELECT
    c.stay_id,
    CAST(c.age AS DOUBLE) AS age,
    c.sex AS sex,
    CASE
        WHEN c.diagnosis_icd10 IS NULL THEN NULL
        WHEN SUBSTR(UPPER(c.diagnosis_icd10), 1, 1) IN ('A', 'B') THEN 'infectious'
        WHEN SUBSTR(UPPER(c.diagnosis_icd10), 1, 1) = 'C' THEN 'neoplasm'
        WHEN SUBSTR(UPPER(c.diagnosis_icd10), 1, 1) = 'D'
             AND SUBSTR(c.diagnosis_icd10, 2, 1) IN ('0', '1', '2', '3', '4') THEN 'neoplasm'
        WHEN SUBSTR(UPPER(c.diagnosis_icd10), 1, 1) = 'D' THEN 'blood'
        WHEN SUBSTR(UPPER(c.diagnosis_icd10), 1, 1) = 'E' THEN 'endocrine'
        WHEN SUBSTR(UPPER(c.diagnosis_icd10), 1, 1) = 'F' THEN 'mental'
        WHEN SUBSTR(UPPER(c.diagnosis_icd10), 1, 1) = 'G' THEN 'nervous'
        WHEN SUBSTR(UPPER(c.diagnosis_icd10), 1, 1) = 'I' THEN 'circulatory'
        WHEN SUBSTR(UPPER(c.diagnosis_icd10), 1, 1) = 'J' THEN 'respiratory'
        WHEN SUBSTR(UPPER(c.diagnosis_icd10), 1, 1) = 'K' THEN 'digestive'
        WHEN SUBSTR(UPPER(c.diagnosis_icd10), 1, 1) = 'N' THEN 'genitourinary'
        WHEN SUBSTR(UPPER(c.diagnosis_icd10), 1, 1) IN ('S', 'T') THEN 'injury'
        WHEN SUBSTR(UPPER(c.diagnosis_icd10), 1, 1) = 'R' THEN 'symptoms'
        ELSE 'other'
    END AS diagnosis_category,
    a.gcs,
    a.map,
    a.heart_rate,
    a.resp_rate,
    a.temperature,
    a.spo2,
    a.creatinine,
    a.lactate,
    a.albumin,
    a.bilirubin,
    a.platelets,
    a.inr,
    a.vasopressor,
    a.ventilation
FROM cohort c
LEFT JOIN event_features a ON c.stay_id = a.stay_id
ORDER BY c.stay_id
