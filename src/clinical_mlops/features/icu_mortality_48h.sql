-- Features for icu_mortality_48h: one row per cohort stay, only the 17 declared features.
--
-- Inputs (registered by the engine, DuckDB or Spark SQL):
--   cohort(stay_id, age, sex, diagnosis_icd10, window_start, window_end)
--   events(stay_id, charttime, variable, value)
--   feature_ranges(variable, low, high)   -- physiological valid ranges from the task spec
--
-- Only events inside [window_start, window_end) are used: the window ends at the
-- prediction time, so nothing charted after it can reach a feature. Values outside
-- the valid range are device artefacts and are ignored. Portable SQL only: it runs
-- unchanged on DuckDB and Spark SQL.

WITH windowed AS (
    SELECT e.stay_id, e.variable, e.value
    FROM events e
    JOIN cohort c
      ON e.stay_id = c.stay_id
     AND e.charttime >= c.window_start
     AND e.charttime < c.window_end
    JOIN feature_ranges r
      ON e.variable = r.variable
     AND e.value >= r.low
     AND e.value <= r.high
    WHERE e.value IS NOT NULL
),
agg AS (
    SELECT
        stay_id,
        MIN(CASE WHEN variable = 'gcs' THEN value END)          AS gcs,
        MIN(CASE WHEN variable = 'map' THEN value END)          AS map,
        MAX(CASE WHEN variable = 'heart_rate' THEN value END)   AS heart_rate,
        MAX(CASE WHEN variable = 'resp_rate' THEN value END)    AS resp_rate,
        MAX(CASE WHEN variable = 'temperature' THEN value END)  AS temperature,
        MIN(CASE WHEN variable = 'spo2' THEN value END)         AS spo2,
        MAX(CASE WHEN variable = 'creatinine' THEN value END)   AS creatinine,
        MAX(CASE WHEN variable = 'lactate' THEN value END)      AS lactate,
        MIN(CASE WHEN variable = 'albumin' THEN value END)      AS albumin,
        MAX(CASE WHEN variable = 'bilirubin' THEN value END)    AS bilirubin,
        MIN(CASE WHEN variable = 'platelets' THEN value END)    AS platelets,
        MAX(CASE WHEN variable = 'inr' THEN value END)          AS inr,
        MAX(CASE WHEN variable = 'vasopressor' THEN value END)  AS vasopressor,
        MAX(CASE WHEN variable = 'ventilation' THEN value END)  AS ventilation
    FROM windowed
    GROUP BY stay_id
)
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
    CAST(a.vasopressor AS INTEGER) AS vasopressor,
    CAST(a.ventilation AS INTEGER) AS ventilation
FROM cohort c
LEFT JOIN agg a ON c.stay_id = a.stay_id
ORDER BY c.stay_id
