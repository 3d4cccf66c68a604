//! The one `match` over client frames: each frame to its handler, refusals to `error` frames.

use super::*;

impl Desk {
    // ------------------------------------------------------------------ frames

    /// Handles one frame from an authenticated connection. Answers and errors are
    /// queued on the connection.
    pub async fn handle(self: &Arc<Self>, conn: &ConnRef, session: &Session, frame: ClientFrame) {
        let kind = frame.type_name();
        let conversation = frame.conversation();
        let client_id = match &frame {
            ClientFrame::Send { client_id, .. } | ClientFrame::Note { client_id, .. } => {
                Some(client_id.clone())
            }
            _ => None,
        };
        if let Err(Refusal(code, message)) = self.dispatch(conn, session, frame).await {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(telemetry::REFUSED, "code" => code.as_str()).increment(1);
            conn.send(ServerFrame::Error {
                code,
                message,
                frame: Some(kind.to_owned()),
                conversation,
                client_id,
            });
        }
    }

    pub(super) async fn dispatch(
        self: &Arc<Self>,
        conn: &ConnRef,
        session: &Session,
        frame: ClientFrame,
    ) -> Outcome {
        match frame {
            ClientFrame::Hello { .. } => refuse(ErrorCode::HelloRequired, "hello was already sent"),
            ClientFrame::Ping => {
                conn.send(ServerFrame::Pong);
                Ok(())
            }
            ClientFrame::Start {
                department,
                language,
            } => {
                let Session::Player { card, .. } = session else {
                    return refuse(ErrorCode::Forbidden, "only players start conversations");
                };
                self.start_conversation(conn, card, department, language)
                    .await
            }
            ClientFrame::Send {
                conversation,
                client_id,
                text,
            } => {
                self.append(
                    conn,
                    session,
                    conversation,
                    client_id,
                    text,
                    MessageKind::Text,
                )
                .await
            }
            ClientFrame::Note {
                conversation,
                client_id,
                text,
            } => {
                if !matches!(session, Session::Agent { .. }) {
                    return refuse(ErrorCode::Forbidden, "only agents write notes");
                }
                self.append(
                    conn,
                    session,
                    conversation,
                    client_id,
                    text,
                    MessageKind::Note,
                )
                .await
            }
            ClientFrame::Typing {
                conversation,
                active,
            } => {
                self.participant_live(session, conversation).await?;
                self.signal(
                    conn,
                    conversation,
                    ServerFrame::Typing {
                        conversation,
                        from: session.participant(),
                        active,
                    },
                );
                Ok(())
            }
            ClientFrame::Read { conversation, seq } => {
                self.participant_live(session, conversation).await?;
                let by = session.participant();
                self.signal(
                    conn,
                    conversation,
                    ServerFrame::Read {
                        conversation,
                        by: by.clone(),
                        seq,
                    },
                );
                // Kept for a client that reloads. Best effort, like the relay:
                // a mark the store cannot take now is only logged.
                if let Err(err) = self.store.mark_read(conversation, by, seq).await {
                    tracing::debug!(%err, conversation = %conversation, "read mark not stored");
                }
                Ok(())
            }
            ClientFrame::Resume {
                conversation,
                after,
            } => self.resume(conn, session, conversation, after).await,
            ClientFrame::Close {
                conversation,
                reason,
            } => self.close(session, conversation, reason).await,
            ClientFrame::Rate {
                conversation,
                score,
                comment,
            } => self.rate(conn, session, conversation, score, comment).await,
            ClientFrame::History => {
                let Session::Player { card, .. } = session else {
                    return refuse(ErrorCode::Forbidden, "history is for players");
                };
                let conversations = self
                    .store
                    .conversations(ConversationFilter {
                        player: Some(card.id.clone()),
                        limit: 50,
                        ..Default::default()
                    })
                    .await?
                    .into_iter()
                    .map(|r| r.summary)
                    .collect();
                conn.send(ServerFrame::History { conversations });
                Ok(())
            }
            ClientFrame::SignOut => {
                let Session::Agent { id, .. } = session else {
                    return refuse(ErrorCode::Forbidden, "only agents sign out");
                };
                // Every session token of the agent ends with it, not only the
                // connections open now: one left in another browser, or copied,
                // is refused from here on.
                self.store.end_sessions(id, now_ms()).await?;
                self.route(Command::SignOut { agent: id.clone() }).await?;
                tracing::info!(agent = %id, "signed out");
                self.broadcast(Event::SignedOut { agent: id.clone() }).await;
                Ok(())
            }
            ClientFrame::SetStatus { status } => {
                let Session::Agent { id, .. } = session else {
                    return refuse(ErrorCode::Forbidden, "only agents have a status");
                };
                if status == AgentStatus::Offline {
                    return refuse(
                        ErrorCode::InvalidField,
                        "set online or away; disconnect to go offline",
                    );
                }
                self.route(Command::SetStatus {
                    agent: id.clone(),
                    status,
                })
                .await?;
                self.statuses.insert(id.clone(), status);
                self.presence_dirty.store(true, Ordering::Relaxed);
                Ok(())
            }
            ClientFrame::Accept { conversation } => {
                let Session::Agent { id, .. } = session else {
                    return refuse(ErrorCode::Forbidden, "only agents accept offers");
                };
                self.route_patiently(Command::Accept {
                    agent: id.clone(),
                    conversation,
                })
                .await?;
                Ok(())
            }
            ClientFrame::Decline { conversation } => {
                let Session::Agent { id, .. } = session else {
                    return refuse(ErrorCode::Forbidden, "only agents decline offers");
                };
                self.route_patiently(Command::Decline {
                    agent: id.clone(),
                    conversation,
                })
                .await?;
                Ok(())
            }
            ClientFrame::Transfer {
                conversation,
                to,
                note,
            } => self.transfer(conn, session, conversation, to, note).await,
            ClientFrame::Take { conversation } => self.take(session, conversation).await,
        }
    }
}
