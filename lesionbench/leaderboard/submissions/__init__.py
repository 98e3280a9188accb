"""Submissions, Kaggle-style: an untrusted predictions or features file is checked (:mod:`.submission_file`),
scored on the public and private parts of a task's test set with labels the participant never sees
(:mod:`.submit`), its public part published (:mod:`.publish`) and its private score kept in the organiser's
folder (:mod:`.organiser`, :mod:`.private_dir`) under the challenge's rules (:mod:`.challenge`)."""
