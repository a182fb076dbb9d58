"""The page's own CSS (Gradio 6 takes it at launch): what no component's scoped ``css_template`` can reach.

Kept free of imports so that ``AppConfig.launch_kwargs`` can name it before Gradio loads.
"""

PAGE_CSS = """
/* Gradio's container hides its overflow, which makes it the scroll container every sticky element sticks to (and
   it never scrolls: the page does). Clipping instead hides the same overflow without that. */
.gradio-container { overflow: clip !important; }
/* Campaigns: Back, Submit & next and Skip, with the status of the last click, stay at the bottom of the window
   while the output above them is read (above the labels Gradio lifts to z-index 40). */
#campaign-actions { position: sticky; bottom: 0; z-index: 100; background: var(--background-fill-primary, #fff);
                    border-top: 1px solid var(--border-color-primary); padding: 8px 0 4px; }
/* Ask, on a wide screen: the case stays in view while the answer, its probes and its review scroll beside it, so a
   sentence selected far down draws its map on an image the reviewer can see. */
@media (min-width: 1024px) { #case-panel { position: sticky; top: 8px; align-self: flex-start; } }
/* Ask: "Saved your review" beside the button that was clicked, not below the fold under it. */
.review-actions { align-items: center; }
"""
