"""Surveys: a field season's photos imported into a catalogue, identified in one batch, reviewed by a team.

A survey lives inside its catalogue folder, so the photos' identification and review travel with the catalogue
they grow (`store`):

    CATALOG/surveys/NAME/
        survey.json              what was imported, from where, with which column mapping
        photos.csv               one row per imported file: its id, sha256, where it is, its metadata (date,
                                 station, survey, viewpoint, individual, comment) and whether photoid can read it
        results/chunk-NNNNNN.npz the batch job's answers, one file per model batch (embeddings, classifier
                                 probabilities, the candidates and scores when identified, why a photo was unreadable)
        job.json                 the batch job's progress
        favourites.json          photos marked as favourites

Modules: `store` (the folder, its files and their atomic writes), `importer` (a folder, a CSV with mapped
columns, or uploaded files: every photo checked, duplicates recognised), `job` (batch identification, resumable),
`matching` (a photo's candidates with score, calibrated probability and distance, recomputed on demand),
`queue` (the review queue's filters, order and claims) and `export` (the sightings table and decision log as
CSV). Decisions about survey photos go to the catalogue's decision log (`photoid.catalog.decisions`). Nothing here
loads a model: the batch job is handed the model call (`photoid survey identify` loads the models, `photoid
serve` hands it its own worker).
"""
