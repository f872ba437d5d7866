// The dashboard's views, one module each.
export { stopTimers } from './shared.js';
export { instancesView, instanceView } from './instances.js';
export { launchView } from './launch.js';
export { templatesView, templateView } from './templates.js';
export { resourcesView } from './resources.js';
export { eventsView } from './events.js';
