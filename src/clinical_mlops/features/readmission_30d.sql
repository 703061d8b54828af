-- Features for readmission_30d: one row per index admission (stay_id = hadm_id), 14 features.
--
-- Inputs (registered by the engine, DuckDB or Spark SQL):
--   cohort(stay_id, subject_id, hadm_id, age, sex, diagnosis_icd10, admittime, dischtime,
--          los_hours, discharge_location, window_start, window_end)
--   event_features(hadm_id, followup_scheduled, heart_rate, ..., hemoglobin)
--                                                        -- generated from the task spec
--   admissions(subject_id, hadm_id, admittime)           -- every admission in the source
--   diagnoses(hadm_id, icd10)                            -- every coded diagnosis
--
-- Discharge physiology (the last valid value in [window_start, window_end), the day before
-- discharge) and the follow-up flag come from event_features, which the engine generates
-- from the spec's declarations. Prior admissions count admissions that started in the 365
-- days before this one. The Charlson index (Quan's ICD-10 coding, 17 conditions, hierarchy: the severe form wins) is
-- computed over the admission's own codes. Portable SQL only: it runs unchanged on DuckDB and
-- Spark SQL.

WITH prior AS (
    SELECT c.hadm_id, COUNT(a.hadm_id) AS prior_admissions_12m
    FROM cohort c
    LEFT JOIN admissions a
      ON a.subject_id = c.subject_id
     AND a.admittime < c.admittime
     AND a.admittime >= c.admittime - INTERVAL '365' DAY
    GROUP BY c.hadm_id
),
conditions AS (
    SELECT
        d.hadm_id,
        MAX(CASE WHEN d.icd10 LIKE 'I21%' OR d.icd10 LIKE 'I22%' OR d.icd10 LIKE 'I25.2%' THEN 1 ELSE 0 END) AS mi,
        MAX(CASE WHEN d.icd10 LIKE 'I50%' OR d.icd10 LIKE 'I11.0%' OR d.icd10 LIKE 'I13.0%' THEN 1 ELSE 0 END) AS chf,
        MAX(CASE WHEN d.icd10 LIKE 'I70%' OR d.icd10 LIKE 'I71%' OR d.icd10 LIKE 'I73%' THEN 1 ELSE 0 END) AS pvd,
        MAX(CASE WHEN d.icd10 LIKE 'I6%' OR d.icd10 LIKE 'G45%' THEN 1 ELSE 0 END) AS cvd,
        MAX(CASE WHEN d.icd10 LIKE 'F0%' OR d.icd10 LIKE 'G30%' THEN 1 ELSE 0 END) AS dementia,
        MAX(CASE WHEN d.icd10 LIKE 'J4%' THEN 1 ELSE 0 END) AS copd,
        MAX(CASE WHEN d.icd10 LIKE 'M05%' OR d.icd10 LIKE 'M06%' OR d.icd10 LIKE 'M32%' THEN 1 ELSE 0 END) AS rheum,
        MAX(CASE WHEN d.icd10 LIKE 'K25%' OR d.icd10 LIKE 'K26%' OR d.icd10 LIKE 'K27%' OR d.icd10 LIKE 'K28%' THEN 1 ELSE 0 END) AS ulcer,
        MAX(CASE WHEN d.icd10 LIKE 'K70%' OR d.icd10 LIKE 'K73%' OR d.icd10 LIKE 'K74%' THEN 1 ELSE 0 END) AS liver_mild,
        MAX(CASE WHEN d.icd10 LIKE 'E1_.9%' OR d.icd10 LIKE 'E1_.0%' OR d.icd10 LIKE 'E1_.1%' THEN 1 ELSE 0 END) AS diabetes,
        MAX(CASE WHEN d.icd10 LIKE 'E1_.2%' OR d.icd10 LIKE 'E1_.3%' OR d.icd10 LIKE 'E1_.4%' OR d.icd10 LIKE 'E1_.5%' THEN 1 ELSE 0 END) AS diabetes_compl,
        MAX(CASE WHEN d.icd10 LIKE 'G81%' OR d.icd10 LIKE 'G82%' THEN 1 ELSE 0 END) AS hemiplegia,
        MAX(CASE WHEN d.icd10 LIKE 'N18%' OR d.icd10 LIKE 'N19%' THEN 1 ELSE 0 END) AS renal,
        MAX(CASE WHEN d.icd10 LIKE 'C%' AND NOT (d.icd10 LIKE 'C77%' OR d.icd10 LIKE 'C78%' OR d.icd10 LIKE 'C79%' OR d.icd10 LIKE 'C80%') THEN 1 ELSE 0 END) AS cancer,
        MAX(CASE WHEN d.icd10 LIKE 'K72%' OR d.icd10 LIKE 'K76.6%' OR d.icd10 LIKE 'I85%' THEN 1 ELSE 0 END) AS liver_severe,
        MAX(CASE WHEN d.icd10 LIKE 'C77%' OR d.icd10 LIKE 'C78%' OR d.icd10 LIKE 'C79%' OR d.icd10 LIKE 'C80%' THEN 1 ELSE 0 END) AS metastatic,
        MAX(CASE WHEN d.icd10 LIKE 'B20%' OR d.icd10 LIKE 'B21%' OR d.icd10 LIKE 'B22%' OR d.icd10 LIKE 'B24%' THEN 1 ELSE 0 END) AS hiv
    FROM diagnoses d
    JOIN cohort c ON d.hadm_id = c.hadm_id
    GROUP BY d.hadm_id
),
charlson AS (
    SELECT
        hadm_id,
        mi + chf + pvd + cvd + dementia + copd + rheum + ulcer
        + CASE WHEN liver_severe = 1 THEN 3 ELSE liver_mild END
        + CASE WHEN diabetes_compl = 1 THEN 2 ELSE diabetes END
        + 2 * hemiplegia + 2 * renal
        + CASE WHEN metastatic = 1 THEN 6 ELSE 2 * cancer END
        + 6 * hiv AS charlson_index
    FROM conditions
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
    CAST(c.los_hours / 24.0 AS DOUBLE) AS length_of_stay,
    CAST(p.prior_admissions_12m AS DOUBLE) AS prior_admissions_12m,
    CAST(COALESCE(ch.charlson_index, 0) AS DOUBLE) AS charlson_index,
    CASE
        WHEN c.discharge_location IS NULL THEN NULL
        WHEN c.discharge_location IN ('HOME', 'HOME_HEALTH', 'SNF', 'REHAB', 'AGAINST_ADVICE')
            THEN c.discharge_location
        ELSE 'OTHER'
    END AS discharge_disposition,
    v.followup_scheduled,
    v.heart_rate,
    v.sbp,
    v.resp_rate,
    v.temperature,
    v.spo2,
    v.hemoglobin
FROM cohort c
LEFT JOIN event_features v ON c.hadm_id = v.hadm_id
LEFT JOIN prior p ON c.hadm_id = p.hadm_id
LEFT JOIN charlson ch ON c.hadm_id = ch.hadm_id
ORDER BY c.stay_id
