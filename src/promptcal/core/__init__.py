"""The data model and framework every layer uses: errors, configuration, the Task
framework, the exposure and its PSF, background and aperture-correction models, source
catalogs and footprints, source ids, the camera geometry and process tuning."""
