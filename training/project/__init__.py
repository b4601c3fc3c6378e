"""The project folder the CLI and the annotator share (``folder.Project``), the pipeline that segments every query
of a run (``pipeline.run_queries``) and the project's run on top of it (``run.run_project``)."""
